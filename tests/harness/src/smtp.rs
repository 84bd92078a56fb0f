//! A tiny SMTP server for tests: it speaks enough of RFC 5321 (EHLO/HELO,
//! MAIL, RCPT, DATA, RSET, NOOP, QUIT) for a real client to hand it mail,
//! and records each message it accepted. [`SmtpServer::fail_with`] makes it
//! refuse mail with a reply of the test's choosing, as a server in trouble
//! would; [`SmtpServer::recover`] makes it accept again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (MAIL FROM), without angle brackets.
    pub from: String,
    /// The envelope recipients (RCPT TO).
    pub to: Vec<String>,
    /// The message as sent after DATA: headers and body, dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl ReceivedMail {
    /// The value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(current) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    current.push(' ');
                    current.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }

    /// The body after the headers.
    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }
}

#[derive(Debug, Default)]
struct State {
    received: Vec<ReceivedMail>,
    /// While set, every MAIL FROM is answered with this reply.
    refusal: Option<String>,
    /// Conversations that ended in a refusal.
    refused: usize,
}

/// A listening SMTP server on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpServer {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(converse(stream, state.clone()));
                }
            }
        });
        Ok(Self { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Every message accepted so far, in order.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.lock().received.clone()
    }

    /// How many messages were refused while failing.
    pub fn refused(&self) -> usize {
        self.lock().refused
    }

    /// Refuses mail from now on, answering MAIL FROM with `reply` (e.g.
    /// `451 4.3.0 try again later`, a transient failure).
    pub fn fail_with(&self, reply: &str) {
        self.lock().refusal = Some(reply.to_owned());
    }

    /// Accepts mail again.
    pub fn recover(&self) {
        self.lock().refusal = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client's conversation; ends on QUIT, a closed connection or an I/O error.
async fn converse(stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 emporium-test-smtp ready\r\n").await?;
    let mut from: Option<String> = None;
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let verb = command.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => "250-emporium-test-smtp\r\n250-8BITMIME\r\n250 SMTPUTF8".to_owned(),
            "HELO" | "NOOP" => "250 OK".to_owned(),
            "RSET" => {
                (from, to) = (None, Vec::new());
                "250 OK".to_owned()
            }
            "MAIL" => {
                let refusal = {
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    let refusal = state.refusal.clone();
                    if refusal.is_some() {
                        state.refused += 1;
                    }
                    refusal
                };
                match refusal {
                    Some(refusal) => refusal,
                    None => {
                        from = Some(address(command, "FROM:"));
                        to.clear();
                        "250 OK".to_owned()
                    }
                }
            }
            "RCPT" if from.is_some() => {
                to.push(address(command, "TO:"));
                "250 OK".to_owned()
            }
            "DATA" if from.is_some() && !to.is_empty() => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    let text = line.trim_end_matches(['\r', '\n']);
                    if text == "." {
                        break;
                    }
                    // Dot-stuffing: the client put a dot before every line that starts with one.
                    data.push_str(text.strip_prefix('.').unwrap_or(text));
                    data.push_str("\r\n");
                }
                let mail = ReceivedMail { from: from.take().unwrap_or_default(), to: std::mem::take(&mut to), data };
                state.lock().unwrap_or_else(PoisonError::into_inner).received.push(mail);
                "250 OK queued".to_owned()
            }
            "RCPT" | "DATA" => "503 bad sequence of commands".to_owned(),
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => "502 command not implemented".to_owned(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// The address in `MAIL FROM:<a@b> …` or `RCPT TO:<a@b> …`.
fn address(command: &str, after: &str) -> String {
    let upper = command.to_ascii_uppercase();
    let start = upper.find(after).map_or(0, |at| at + after.len());
    let rest = command[start..].trim_start();
    let rest = rest.strip_prefix('<').unwrap_or(rest);
    rest.split(['>', ' ']).next().unwrap_or("").to_owned()
}
