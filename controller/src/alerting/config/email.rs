//! Email channels (`type: email`): the SMTP server, its TLS mode and
//! credentials, the sender and the recipients; their validation, and the
//! parsing of mail addresses that delivery uses as well.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Secret;
use super::channel::{ChannelKind, check_secret, is_loopback};
use crate::config::jobs::Checker;
use crate::model::named_enum;

named_enum!(
    /// How the SMTP connection is secured.
    SmtpTls, "tls mode" {
        /// Plain connection upgraded with STARTTLS (the default; port 587).
        Starttls => "starttls",
        /// TLS from the first byte (port 465).
        Tls => "tls",
        /// No TLS at all (port 25): only to a loopback host.
        Plain => "none",
    }
);

impl SmtpTls {
    /// The port used when `port` is not set.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::Plain => 25,
        }
    }
}

/// SMTP user name and password.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmtpCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// The SMTP server of an email channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Smtp {
    /// Host name or address.
    pub host: String,
    /// Port ([`SmtpTls::default_port`] when not set).
    pub port: u16,
    /// How the connection is secured.
    pub tls: SmtpTls,
    /// Credentials, when the server wants them.
    pub credentials: Option<SmtpCredentials>,
}

/// An email channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmailChannel {
    /// The SMTP server.
    pub smtp: Smtp,
    /// The sender (`addr@host` or `Name <addr@host>`).
    pub from: String,
    /// The recipients (at least one, same forms).
    pub to: Vec<String>,
}

/// `type: email` without its `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    smtp: RawSmtp,
    from: String,
    to: Vec<String>,
}

/// `smtp:` of an email channel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    tls: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Checks `channels.NAME` of `type: email`: the SMTP server, the sender and
/// the recipients.
pub(super) fn check_email(c: &mut Checker<'_>, name: &str, raw: RawEmail) -> Option<ChannelKind> {
    let smtp_at = |field: &'static str| -> [&str; 4] { ["channels", name, "smtp", field] };
    let host = raw.smtp.host.trim().to_string();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
        c.error(&smtp_at("host"), format!("invalid host {:?}", raw.smtp.host));
    }
    let tls = c
        .parse(&smtp_at("tls"), raw.smtp.tls.as_deref(), |s| s.parse::<SmtpTls>())
        .unwrap_or(SmtpTls::Starttls);
    if tls == SmtpTls::Plain && !is_loopback(&host) {
        c.error(
            &smtp_at("tls"),
            format!(
                "`tls: none` sends credentials and mail in clear text: it is only allowed to a loopback host \
                 (localhost, 127.0.0.1, ::1), not \"{host}\""
            ),
        );
    }
    if raw.smtp.port == Some(0) {
        c.error(&smtp_at("port"), "must be between 1 and 65535");
    }
    let credentials = match (raw.smtp.username, raw.smtp.password) {
        (Some(username), Some(password)) => {
            if username.is_empty() {
                c.error(&smtp_at("username"), "is empty");
            } else if username.chars().any(char::is_control) {
                // Not quoted: it may come from a variable.
                c.error(&smtp_at("username"), "contains a control character (CR, LF, ...)");
            }
            check_secret(c, &smtp_at("password"), &password);
            Some(SmtpCredentials {
                username,
                password: Secret(password),
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            c.error(&smtp_at("username"), "a `username` needs a `password`");
            None
        }
        (None, Some(_)) => {
            c.error(&smtp_at("password"), "a `password` needs a `username`");
            None
        }
    };
    if let Err(e) = check_address(&raw.from) {
        c.error(&["channels", name, "from"], e);
    }
    if raw.to.is_empty() {
        c.error(&["channels", name, "to"], "needs at least one recipient");
    }
    let mut seen = BTreeSet::new();
    for (index, address) in raw.to.iter().enumerate() {
        let item = format!("[{index}]");
        if let Err(e) = check_address(address) {
            c.error(&["channels", name, "to", &item], e);
        } else if !seen.insert(address.as_str()) {
            c.error(
                &["channels", name, "to", &item],
                format!("\"{address}\" is listed twice"),
            );
        }
    }
    Some(ChannelKind::Email(EmailChannel {
        smtp: Smtp {
            port: raw.smtp.port.unwrap_or(tls.default_port()),
            host,
            tls,
            credentials,
        },
        from: raw.from,
        to: raw.to,
    }))
}

/// A mail address, `local@domain` or `Display Name <local@domain>`.
fn check_address(text: &str) -> Result<(), String> {
    parse_mailbox(text).map(|_| ())
}

/// Parses a mail address (`local@domain` or `Display Name <local@domain>`)
/// the way delivery uses it: its form is checked first (with a precise
/// reason), then lettre must read the same address from it. Address literals
/// (`root@[127.0.0.1]`), which lettre's mailbox parser does not take, are
/// built from their parts. Errors read `invalid email address "TEXT": why`.
pub fn parse_mailbox(text: &str) -> Result<lettre::message::Mailbox, String> {
    use lettre::message::Mailbox;
    let address = check_address_form(text)?;
    let invalid = |why: &str| format!("invalid email address \"{text}\": {why}");
    match text.trim().parse::<Mailbox>() {
        Ok(mailbox) if mailbox.email.to_string().eq_ignore_ascii_case(address) => Ok(mailbox),
        Ok(mailbox) => Err(invalid(&format!(
            "read as <{}>; quote the display name (\"Name\" <local@domain>)",
            mailbox.email
        ))),
        Err(e) => {
            let hint = "use `local@domain` or `Display Name <local@domain>`, quoting a name with commas or dots";
            let refused = || invalid(&format!("{} ({hint})", e.to_string().to_lowercase()));
            let (user, domain) = address.rsplit_once('@').ok_or_else(refused)?;
            if !domain.starts_with('[') {
                return Err(refused());
            }
            let email = lettre::Address::new(user, domain).map_err(|_| refused())?;
            let name = text
                .trim()
                .strip_suffix('>')
                .and_then(|rest| rest.rsplit_once('<'))
                .map(|(name, _)| name.trim().trim_matches('"').trim().to_string())
                .filter(|name| !name.is_empty());
            Ok(Mailbox::new(name, email))
        }
    }
}

/// The form of a mail address (`local@domain` or `Display Name <local@domain>`),
/// with a precise reason when it is wrong; the address part on success.
fn check_address_form(text: &str) -> Result<&str, String> {
    let invalid = |why: &str| format!("invalid email address \"{text}\": {why}");
    if text.contains(|c: char| c.is_control()) {
        return Err(invalid("control characters are not allowed"));
    }
    let trimmed = text.trim();
    let address = match trimmed.strip_suffix('>') {
        Some(rest) => {
            let (name, address) = rest.rsplit_once('<').ok_or_else(|| invalid("unbalanced `<` `>`"))?;
            if name.contains(['<', '>']) {
                return Err(invalid("unbalanced `<` `>`"));
            }
            address
        }
        None => trimmed,
    };
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or_else(|| invalid("expected local-part@domain"))?;
    const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    if local.is_empty()
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
    {
        return Err(invalid("bad local part (before the @)"));
    }
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return ip
            .parse::<IpAddr>()
            .map(|_| address)
            .map_err(|_| invalid("bad address literal"));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err(invalid(
            "bad domain (after the @; use the punycode form of international names)",
        ));
    }
    Ok(address)
}
