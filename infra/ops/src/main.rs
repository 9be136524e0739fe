//! `cargo ops ...`: see `superpay_ops`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match superpay_ops::run(std::env::args()).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cargo ops: {e}");
            ExitCode::FAILURE
        }
    }
}
