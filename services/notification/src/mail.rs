//! Where emails go: one small trait, [`Sink`], and three sinks chosen by
//! `NOTIFICATION_EMAIL`: `smtp://host:port` (lettre, plain SMTP to a relay or
//! a dev server such as mailpit), `file:<dir>` (one `.eml` file per email)
//! and `log` (a log line per email, the default).
//!
//! A sink answers `Ok` only once the email is accepted; the sender marks it
//! sent after that, so a crash in between sends it again (at least once).
//! Every copy carries the same `Message-ID`, derived from the queued row, so
//! a receiving system can tell a repeat; the file sink simply rewrites the
//! same file.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use uuid::Uuid;

/// One email, ready to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// The queued row's id: the `Message-ID` and the file name.
    pub id: Uuid,
    pub to_name: String,
    pub to_address: String,
    pub subject: String,
    pub text: String,
    pub date: DateTime<Utc>,
}

/// Why an email was not accepted; the sender backs off and tries again.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the recipient's address {address:?} is not valid: {reason}")]
    Address { address: String, reason: String },
    #[error("building the message: {0}")]
    Build(String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("writing the email file: {0}")]
    File(#[from] std::io::Error),
}

/// Somewhere emails can be handed to.
pub trait Sink: Send + Sync + fmt::Debug {
    /// Resolves once `email` is accepted.
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<(), SendError>>;
}

/// The message as it goes on the wire (or into a file).
pub fn message(from: &Mailbox, email: &OutgoingEmail) -> Result<Message, SendError> {
    let address: Address = email.to_address.parse().map_err(|e: lettre::address::AddressError| SendError::Address {
        address: email.to_address.clone(),
        reason: e.to_string(),
    })?;
    let domain = from.email.domain().to_owned();
    Message::builder()
        .message_id(Some(format!("<{}@{domain}>", email.id)))
        .date(SystemTime::from(email.date))
        .from(from.clone())
        .to(Mailbox::new(Some(email.to_name.clone()), address))
        .subject(email.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(email.text.clone())
        .map_err(|e| SendError::Build(e.to_string()))
}

/// Plain SMTP (no TLS is built in: a local relay or a dev server such as mailpit).
#[derive(Clone)]
pub struct SmtpSink {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl fmt::Debug for SmtpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSink").field("server", &self.server).field("from", &self.from.to_string()).finish()
    }
}

impl SmtpSink {
    pub fn new(host: &str, port: u16, from: Mailbox, timeout: Duration) -> Self {
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port).timeout(Some(timeout)).build();
        Self { transport, from, server: format!("{host}:{port}") }
    }
}

impl Sink for SmtpSink {
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let message = message(&self.from, email)?;
            self.transport.send(message).await.map_err(|e| SendError::Smtp(e.to_string()))?;
            Ok(())
        })
    }
}

/// One `<id>.eml` per email in a directory (created when missing); a file
/// appears whole or not at all.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
    from: Mailbox,
}

impl FileSink {
    pub fn new(dir: impl Into<PathBuf>, from: Mailbox) -> Self {
        Self { dir: dir.into(), from }
    }
}

impl Sink for FileSink {
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let bytes = message(&self.from, email)?.formatted();
            tokio::fs::create_dir_all(&self.dir).await?;
            let part = self.dir.join(format!(".{}.eml.part", email.id));
            tokio::fs::write(&part, bytes).await?;
            tokio::fs::rename(&part, self.dir.join(format!("{}.eml", email.id))).await?;
            Ok(())
        })
    }
}

/// A log line per email: the development default, so nothing leaves the machine.
#[derive(Debug, Clone)]
pub struct LogSink {
    from: Mailbox,
}

impl LogSink {
    pub fn new(from: Mailbox) -> Self {
        Self { from }
    }
}

impl Sink for LogSink {
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            // Built anyway, so an email the other sinks would refuse is refused here too.
            message(&self.from, email)?;
            tracing::info!(email.id = %email.id, to = %email.to_address, subject = %email.subject, text = %email.text, "email");
            Ok(())
        })
    }
}

/// `NOTIFICATION_EMAIL`: which sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSetting {
    Log,
    File(PathBuf),
    Smtp { host: String, port: u16 },
}

impl SinkSetting {
    pub fn open(&self, from: Mailbox, timeout: Duration) -> Arc<dyn Sink> {
        match self {
            SinkSetting::Log => Arc::new(LogSink::new(from)),
            SinkSetting::File(dir) => Arc::new(FileSink::new(dir.clone(), from)),
            SinkSetting::Smtp { host, port } => Arc::new(SmtpSink::new(host, *port, from, timeout)),
        }
    }
}

impl FromStr for SinkSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const EXPECTED: &str = "expected log, file:<directory> or smtp://<host>:<port>";
        if text == "log" {
            return Ok(SinkSetting::Log);
        }
        if let Some(dir) = text.strip_prefix("file:") {
            return if dir.is_empty() {
                Err(format!("{EXPECTED}: the directory is missing"))
            } else {
                Ok(Self::File(dir.into()))
            };
        }
        if let Some(server) = text.strip_prefix("smtp://") {
            let server = server.trim_end_matches('/');
            let (host, port) = match server.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| format!("{EXPECTED}: bad port {port:?}"))?),
                None => (server, 25),
            };
            if host.is_empty() || host.contains(['/', '@', '?']) {
                return Err(format!("{EXPECTED}: bad host {host:?}"));
            }
            return Ok(SinkSetting::Smtp { host: host.to_owned(), port });
        }
        if text.starts_with("smtps://") {
            return Err("smtps:// is not supported: no TLS is built in; relay through a local SMTP server".to_owned());
        }
        Err(format!("{EXPECTED}, got {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn given_each_form_when_parsed_then_the_sink_is_the_one_named() {
        assert_eq!("log".parse::<SinkSetting>().unwrap(), SinkSetting::Log);
        assert_eq!("file:.run/mail".parse::<SinkSetting>().unwrap(), SinkSetting::File(".run/mail".into()));
        assert_eq!(
            "smtp://mailpit:1025".parse::<SinkSetting>().unwrap(),
            SinkSetting::Smtp { host: "mailpit".into(), port: 1025 }
        );
        assert_eq!(
            "smtp://127.0.0.1".parse::<SinkSetting>().unwrap(),
            SinkSetting::Smtp { host: "127.0.0.1".into(), port: 25 }
        );
        for bad in ["", "mail", "file:", "smtp://", "smtp://host:port", "smtps://host:465", "smtp://user@host:25"] {
            assert!(bad.parse::<SinkSetting>().is_err(), "{bad:?}");
        }
    }

    fn email(to: &str) -> OutgoingEmail {
        OutgoingEmail {
            id: Uuid::now_v7(),
            to_name: "Ada Lovelace".into(),
            to_address: to.into(),
            subject: "Order confirmed".into(),
            text: "Hello Ada,\n\nYour order is confirmed.\n".into(),
            date: DateTime::parse_from_rfc3339("2026-11-21T09:20:00Z").unwrap().to_utc(),
        }
    }

    #[test]
    fn given_an_email_when_built_then_it_carries_a_stable_message_id_and_the_recipient() {
        let from: Mailbox = "Emporium <no-reply@emporium.test>".parse().unwrap();
        let email = email("ada@example.com");
        let text = String::from_utf8(message(&from, &email).unwrap().formatted()).unwrap();
        assert!(text.contains(&format!("Message-ID: <{}@emporium.test>", email.id)), "{text}");
        assert!(text.contains("To: \"Ada Lovelace\" <ada@example.com>"), "{text}");
        assert!(text.contains("Subject: Order confirmed"), "{text}");
        assert!(text.contains("Date: Sat, 21 Nov 2026 09:20:00"), "{text}");
        assert!(matches!(message(&from, &self::email("not an address")), Err(SendError::Address { .. })));
    }

    #[tokio::test]
    async fn given_the_file_sink_when_an_email_is_sent_twice_then_one_file_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::new(dir.path().join("mail"), "no-reply@emporium.test".parse().unwrap());
        let email = email("ada@example.com");
        sink.send(&email).await.unwrap();
        sink.send(&email).await.unwrap();
        let files: Vec<_> =
            std::fs::read_dir(dir.path().join("mail")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, vec![std::ffi::OsString::from(format!("{}.eml", email.id))]);
    }
}
