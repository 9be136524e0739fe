//! The offline payments function's HTTP routes (template.yaml `OfflinePaymentsFunction`), called by
//! merchant terminals, signed with the terminal's own key:
//!
//! - `POST /offline/payments`        `{"amount": {amount, currency}, "code": "SP1...."}` with an
//!   Idempotency-Key: verifies and spends the code, records the payment, its settlement job and
//!   its amount in the device's unsettled amount (within the device's offline limit) in one
//!   transaction, answers 202 with the payment id
//! - `GET  /offline/payments/{id}`   the payment's state

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::device::{DEVICE_MAY_PAY, DeviceStore};
use super::payment::{CODE_UNSPENT, PAYMENT_NEW, Payment, PaymentState, PaymentStore};
use super::{CodeError, OfflineCode};
use crate::Problem;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::dynamo::transact;
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::store::{CLAIM_HELD, IdempotencyStore};
use crate::idempotency::{StoredResponse, in_flight, key_reused};
use crate::keys::KeyService;
use crate::merchant::store::{MERCHANT_ACTIVE, MerchantStore};
use crate::merchant::terminal::{
    TERMINAL_ACTIVE, Terminal, TerminalDirectory, TerminalKind, TerminalStore, terminal_inactive,
};
use crate::merchant::{MerchantStatus, inactive_merchant, unknown_merchant};
use crate::money::{Money, MoneyInput};
use crate::nonce::NonceStore;
use crate::outbox::Outbox;
use crate::problem::catalogue;
use crate::queues::{SettlementJob, SettlementMessage};

pub struct OfflinePaymentsApi {
    dynamodb: aws_sdk_dynamodb::Client,
    payments: PaymentStore,
    devices: DeviceStore,
    terminals: TerminalDirectory,
    merchants: MerchantStore,
    nonces: NonceStore,
    idempotency: IdempotencyStore,
    outbox: Outbox,
    settlement_queue: String,
}

/// `POST /offline/payments`'s body: a payer's offline code, presented for an amount.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct OfflinePaymentRequest {
    /// In the merchant's currency, within the payer's device's offline limit.
    amount: MoneyInput,
    /// The code the payer's device shows as a QR code: `SP1.<payload>.<signature>`, each part
    /// base64url (`crate::offline`).
    code: String,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use super::payment::OfflinePaymentView;
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /offline/payments",
            summary: "a merchant's terminal presents a payer's offline code: the code is spent and the payment accepted, to be settled from the payer's offline reserve",
            request: Some(schema::<OfflinePaymentRequest>),
            path: &[],
            query: &[],
            answers: &[(202, Some(schema::<OfflinePaymentView>))],
            codes: &[
                // The signature's key id is not an id.
                catalogue::INVALID_ID,
                catalogue::TERMINAL_INACTIVE,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::UNKNOWN_MERCHANT,
                catalogue::MERCHANT_INACTIVE,
                catalogue::OFFLINE_CODE_MALFORMED,
                catalogue::OFFLINE_CODE_INVALID,
                catalogue::OFFLINE_CODE_EXPIRED,
                catalogue::OFFLINE_CODE_FROM_FUTURE,
                catalogue::OFFLINE_CODE_REPLAYED,
                catalogue::DEVICE_REVOKED,
                catalogue::CURRENCY_NOT_ACCEPTED,
                catalogue::OVER_OFFLINE_LIMIT,
                catalogue::OFFLINE_LIMIT_EXCEEDED,
                catalogue::DEVICE_BUSY,
            ],
            headers: &[Header::Signed, Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /offline/payments/{id}",
            summary: "one of the terminal's merchant's offline payments",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<OfflinePaymentView>))],
            codes: &[catalogue::TERMINAL_INACTIVE, catalogue::UNKNOWN_PAYMENT],
            headers: &[Header::Signed],
            form: None,
            pages: &[],
        },
    ]
};

/// A code from a device its owner revoked (a lost phone): refused, nothing recorded.
fn device_revoked() -> Problem {
    Problem::new(
        catalogue::DEVICE_REVOKED,
        "the payer revoked this device: its codes are no longer accepted; ask for another way to pay",
    )
}

fn unknown_payment(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_PAYMENT, format!("no payment {id:?}"))
}

impl OfflinePaymentsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        Ok(OfflinePaymentsApi {
            payments: PaymentStore::new(
                dynamodb.clone(),
                aws::env("OFFLINE_PAYMENTS_TABLE")?,
                aws::env("OFFLINE_CODES_TABLE")?,
            ),
            devices: DeviceStore::new(dynamodb.clone(), aws::env("DEVICES_TABLE")?),
            terminals: TerminalDirectory::new(
                TerminalStore::new(dynamodb.clone(), aws::env("TERMINALS_TABLE")?),
                KeyService::new(aws_sdk_kms::Client::new(&config), aws::env("PARTY_KEYS_KEY_ID")?),
            ),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            nonces: NonceStore::new(dynamodb.clone(), aws::env("NONCE_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(&config), aws::env("OUTBOX_TABLE")?),
            settlement_queue: aws::env("SETTLEMENT_QUEUE_URL")?,
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let terminal = self.terminals.signer(&request, &self.nonces, now_epoch_seconds(), TerminalKind::Till).await?;
        match route_key(&request) {
            "POST /offline/payments" => self.present(&request, &terminal).await,
            "GET /offline/payments/{id}" => {
                let id = path_parameter(&request, "id")?;
                let payment = self
                    .payments
                    .get(id)
                    .await?
                    .filter(|p| p.merchant_id == terminal.merchant_id)
                    .ok_or_else(|| unknown_payment(id))?;
                Ok(json_response(StatusCode::OK, &payment.view()))
            }
            other => Err(Problem::new(
                catalogue::UNKNOWN_ROUTE,
                format!("the offline payments function has no route {other:?}"),
            )),
        }
    }

    /// Why the device refused a payment its earlier read admitted: revoked, or its other payments
    /// took the room meanwhile. If they left room since, the client retries.
    async fn device_refusal(&self, id: &str, amount: Money) -> Problem {
        let device = match self.devices.get(id).await {
            Ok(Some(device)) => device,
            Ok(None) => return Problem::internal(format!("device {id} vanished")),
            Err(e) => return e.into(),
        };
        if device.revoked_at.is_some() {
            return device_revoked();
        }
        match device.admit(amount) {
            Err(refusal) => refusal.into(),
            Ok(_) => Problem::new(
                catalogue::DEVICE_BUSY,
                "the device's other payments changed while this one was recorded; nothing was recorded; retry with the same Idempotency-Key",
            ),
        }
    }

    async fn present(&self, request: &Request, terminal: &Terminal) -> Result<Response<Body>, Problem> {
        let OfflinePaymentRequest { amount, code } = json_body(request)?;
        let amount = amount.validate()?;
        let caller = format!("terminal:{}", terminal.id);
        self.idempotency
            .run_request(request, &caller, &[], |claim, now| async move {
                let merchant = self
                    .merchants
                    .get(&terminal.merchant_id)
                    .await?
                    .ok_or_else(|| unknown_merchant(&terminal.merchant_id))?;
                if merchant.status != MerchantStatus::Active {
                    return Err(inactive_merchant(&merchant.id));
                }
                let (code, signature) = OfflineCode::parse(&code)?;
                let device = self
                    .devices
                    .by_key_id(&code.key_id)
                    .await?
                    .filter(|d| d.user == code.account)
                    .ok_or(CodeError::BadSignature)?;
                code.verify(&signature, &device.public_key, now)?;
                if device.revoked_at.is_some() {
                    return Err(device_revoked());
                }
                if amount.currency() != merchant.currency {
                    return Err(Problem::new(
                        catalogue::CURRENCY_NOT_ACCEPTED,
                        format!("merchant {} sells in {}", merchant.id, merchant.currency),
                    ));
                }
                let ceiling = device.admit(amount)?;
                let payment = Payment {
                    id: format!("p_{}", &claim.scope.derived_id("payment")[..20]),
                    terminal_id: terminal.id.clone(),
                    merchant_id: merchant.id.clone(),
                    user: device.user.clone(),
                    device_key_id: device.key_id.clone(),
                    counter: code.counter,
                    amount,
                    state: PaymentState::Pending,
                    created_at: now,
                    topup_token: None,
                    counted: true,
                };
                let job = SettlementMessage::Settle(SettlementJob {
                    id: format!("{}/settle", payment.id),
                    payment_id: payment.id.clone(),
                    expire_at: None,
                    link: None,
                })
                .outbox(&self.settlement_queue, 0)
                .map_err(Problem::internal)?;
                let response = json_response(StatusCode::ACCEPTED, &payment.view());
                let items = vec![
                    self.payments.spend_item(&code)?,
                    self.payments.create_item(&payment)?,
                    self.outbox.put_item(&job, now)?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                    self.devices.accept_item(&device.id, amount, ceiling)?,
                    // Suspensions that land after the checks above stop the payment here.
                    self.terminals.store().active_check(&terminal.id)?,
                    self.merchants.active_check(&merchant.id)?,
                ];
                match transact(&self.dynamodb, items).await {
                    Ok(()) => {
                        self.outbox.send(&job).await;
                        Ok(response)
                    }
                    // The payment exists: this key's earlier attempt made it (its record expired
                    // since), if it was for this very code; otherwise the key was reused.
                    Err(e) if e.broke(TERMINAL_ACTIVE) => Err(terminal_inactive(&terminal.id)),
                    Err(e) if e.broke(MERCHANT_ACTIVE) => Err(inactive_merchant(&merchant.id)),
                    Err(e) if e.broke(PAYMENT_NEW) => {
                        let current =
                            self.payments.get(&payment.id).await?.ok_or_else(|| unknown_payment(&payment.id))?;
                        if current.same_request(&payment) {
                            Ok(json_response(StatusCode::ACCEPTED, &current.view()))
                        } else {
                            Err(key_reused())
                        }
                    }
                    // A spent code is refused for good, whatever its device's room.
                    Err(e) if e.broke(CODE_UNSPENT) => Err(CodeError::Replayed.into()),
                    Err(e) if e.broke(DEVICE_MAY_PAY) => Err(self.device_refusal(&device.id, amount).await),
                    Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
                    Err(e) => Err(Problem::internal(e)),
                }
            })
            .await
    }
}
