//! Delivering receipts: SMTP for e-mail, an HTTP webhook for SMS gateways.
//!
//! Both send the job id as an idempotency key (`Message-ID` and an
//! `X-Idempotency-Key` header for mail, `Idempotency-Key` for the webhook),
//! so a provider can drop a retried duplicate. Failures are classified:
//! connection problems, timeouts, 4xx SMTP replies and 5xx/408/429 HTTP
//! answers are transient; 5xx SMTP replies and other 4xx HTTP answers are
//! permanent. Errors never quote the recipient.

use anyhow::anyhow;
use lettre::message::{Mailbox, MultiPart, header::HeaderName, header::HeaderValue};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;
use uuid::Uuid;

use super::render::Receipt;
use crate::runtime::JobError;

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(url: &str, from: &str, timeout: Duration) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow!("SMTP_URL is not valid: {e}"))?
            .timeout(Some(timeout))
            .build();
        let from = from.parse().map_err(|e| anyhow!("RECEIPT_FROM is not a mailbox: {e}"))?;
        Ok(Self { transport, from })
    }

    pub async fn send(
        &self,
        job_id: Uuid,
        to: &str,
        subject: &str,
        receipt: &Receipt,
    ) -> Result<(), JobError> {
        let to: Mailbox =
            to.parse().map_err(|_| JobError::Permanent(anyhow!("the e-mail address is not valid")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{job_id}@receipts.smartpos>")))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Idempotency-Key"),
                job_id.to_string(),
            ))
            .multipart(MultiPart::alternative_plain_html(receipt.text.clone(), receipt.html.clone()))
            .map_err(|e| JobError::Permanent(anyhow!("building the message: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => {
                Err(JobError::Permanent(anyhow!("the mail server refused the receipt: {}", smtp_code(&e))))
            }
            Err(e) => Err(JobError::Transient(anyhow!("sending mail failed: {}", smtp_code(&e)))),
        }
    }
}

/// The SMTP status without the server's text (which may quote the address).
fn smtp_code(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("SMTP {code}"),
        None if e.is_timeout() => "timed out".to_owned(),
        None => "no SMTP reply (connection or TLS problem)".to_owned(),
    }
}

pub struct Webhook {
    client: reqwest::Client,
    url: String,
}

impl Webhook {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { client, url: url.to_owned() })
    }

    pub async fn send(&self, job_id: Uuid, to: &str, receipt: &Receipt) -> Result<(), JobError> {
        let body = serde_json::json!({"to": to, "text": receipt.text, "reference": job_id});
        let response = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", job_id.to_string())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                JobError::Transient(anyhow!("calling the SMS gateway failed: {}", without_url(&e)))
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(JobError::Transient(anyhow!("the SMS gateway answered {status}")))
        } else {
            Err(JobError::Permanent(anyhow!("the SMS gateway refused the receipt: {status}")))
        }
    }
}

fn without_url(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request error"
    }
}
