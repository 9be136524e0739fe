//! `cargo ops ...`: see `superpay_ops`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match superpay_ops::execute(std::env::args()).await {
        Ok((out, found)) => {
            print!("{out}");
            if found { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("cargo ops: {e}");
            ExitCode::FAILURE
        }
    }
}
