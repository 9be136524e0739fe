//! The bank port: asks a payer's bank for money (a direct debit) to fund their offline reserve.
//! Deployed, `BANK_URL` is the bank's debit API; locally it is the simulator's `/bank`, which
//! declines payers whose account id starts with `broke`. A debit is idempotent by its reference.

use serde::{Deserialize, Serialize};

use crate::money::Money;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankAnswer {
    Approved,
    Declined(String),
    /// The bank could not be asked (down, timeout): nothing happened; try again later.
    Unavailable(String),
}

#[derive(Serialize, Deserialize)]
pub struct DebitRequest {
    pub reference: String,
    pub account: String,
    pub amount: Money,
}

pub struct Bank {
    url: String,
}

impl Bank {
    pub fn new(url: impl Into<String>) -> Self {
        Bank { url: url.into() }
    }

    pub async fn debit(&self, reference: &str, account: &str, amount: Money) -> BankAnswer {
        let request = DebitRequest { reference: reference.to_owned(), account: account.to_owned(), amount };
        let response = match crate::outbound::http().post(format!("{}/debits", self.url)).json(&request).send().await {
            Ok(response) => response,
            Err(e) => return BankAnswer::Unavailable(e.to_string()),
        };
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        match (status.as_u16(), body["status"].as_str()) {
            (200, Some("approved")) => BankAnswer::Approved,
            (402, Some("declined")) => {
                BankAnswer::Declined(body["reason"].as_str().unwrap_or("declined by the bank").to_owned())
            }
            _ => BankAnswer::Unavailable(format!("the bank answered {status}")),
        }
    }
}
