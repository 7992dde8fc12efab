//! Email: the subject, plain-text body and HTML body of an alert's mail,
//! with HTML escaping (delivery builds the `multipart/alternative` mail).

use super::{PRODUCT, Tone, escaped, facts, human_time, one_line, title_of, truncate, truncate_start, usable_link};
use crate::alerting::alert::Alert;

/// Email: longest subject.
pub const EMAIL_SUBJECT_MAX: usize = 200;
/// Email: longest error shown.
pub const EMAIL_ERROR_MAX: usize = 10_000;
/// Email: longest output tail shown.
pub const EMAIL_OUTPUT_MAX: usize = 20_000;
/// Email: longest text shown.
pub const EMAIL_TEXT_MAX: usize = 20_000;
/// Email: longest value of one fact.
const EMAIL_FACT_MAX: usize = 2_000;

/// HTML text and attribute values.
pub(super) fn html_escape(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        _ => None,
    }
}

/// `text` with every HTML special character escaped (`&`, `<`, `>`, `"`,
/// `'`): safe in element text and quoted attribute values. The `digest`
/// builtin's HTML part uses it too.
pub fn html_text(text: &str) -> String {
    escaped(text, html_escape)
}

/// An email's rendered parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// `[Worker] <title>`: one line, at most [`EMAIL_SUBJECT_MAX`] characters.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body (every value escaped; the error and output in `<pre>`).
    pub html: String,
}

/// The email of `alert`: both bodies show the title, the text (at most
/// [`EMAIL_TEXT_MAX`]), the [`facts`], the error (at most
/// [`EMAIL_ERROR_MAX`]), the output tail (at most [`EMAIL_OUTPUT_MAX`], kept
/// from its end) and the link.
pub fn email(alert: &Alert) -> Email {
    let title = title_of(alert);
    let subject = truncate(&format!("[{PRODUCT}] {title}"), EMAIL_SUBJECT_MAX).into_owned();
    let facts: Vec<(String, String)> = facts(alert)
        .into_iter()
        .map(|(label, value)| {
            (
                one_line(&truncate(&label, 200)),
                truncate(&value, EMAIL_FACT_MAX).into_owned(),
            )
        })
        .collect();
    let text_body = truncate(alert.text.trim(), EMAIL_TEXT_MAX);
    let text_body = text_body.as_ref();
    let error = alert
        .error
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .map(|e| truncate(e.trim_end(), EMAIL_ERROR_MAX));
    let output = alert
        .output_tail
        .as_deref()
        .filter(|o| !o.trim().is_empty())
        .map(|o| truncate_start(o.trim_end(), EMAIL_OUTPUT_MAX));
    let link = usable_link(alert);

    // Plain text.
    let mut text = format!("{title}\n\n");
    if !text_body.is_empty() {
        text.push_str(text_body);
        text.push_str("\n\n");
    }
    let width = facts.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0) + 1;
    for (label, value) in &facts {
        let value = value.replace('\n', &format!("\n{:width$} ", ""));
        text.push_str(&format!("{:width$} {value}\n", format!("{label}:")));
    }
    if !facts.is_empty() {
        text.push('\n');
    }
    if let Some(error) = &error {
        text.push_str("Error:\n");
        for line in error.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        text.push('\n');
    }
    if let Some(output) = &output {
        text.push_str("Output (last lines):\n");
        for line in output.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        text.push('\n');
    }
    if let Some(link) = link {
        text.push_str(&format!("Open in {PRODUCT}: {link}\n\n"));
    }
    text.push_str(&format!(
        "-- \n{PRODUCT} {} {} at {}\n",
        alert.kind,
        alert.id,
        human_time(alert.at)
    ));

    // HTML.
    let e = |s: &str| escaped(s, html_escape);
    let accent = Tone::of(alert).css();
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    html.push_str(&e(&subject));
    html.push_str("</title></head>\n<body style=\"font-family: sans-serif; color: #1d2939;\">\n");
    html.push_str(&format!(
        "<h2 style=\"border-left: 6px solid {accent}; padding-left: 8px;\">{}</h2>\n",
        e(&title)
    ));
    if !text_body.is_empty() {
        html.push_str(&format!("<p>{}</p>\n", e(text_body).replace('\n', "<br>\n")));
    }
    if !facts.is_empty() {
        html.push_str("<table style=\"border-collapse: collapse;\">\n");
        for (label, value) in &facts {
            html.push_str(&format!(
                "<tr><th style=\"text-align: left; padding: 2px 12px 2px 0; vertical-align: top;\">{}</th><td style=\"padding: 2px 0;\">{}</td></tr>\n",
                e(label),
                e(value).replace('\n', "<br>")
            ));
        }
        html.push_str("</table>\n");
    }
    let pre = "background: #f2f4f7; padding: 8px; white-space: pre-wrap; word-break: break-all;";
    if let Some(error) = &error {
        html.push_str(&format!("<h3>Error</h3>\n<pre style=\"{pre}\">{}</pre>\n", e(error)));
    }
    if let Some(output) = &output {
        html.push_str(&format!(
            "<h3>Output (last lines)</h3>\n<pre style=\"{pre}\">{}</pre>\n",
            e(output)
        ));
    }
    if let Some(link) = link {
        html.push_str(&format!("<p><a href=\"{}\">Open in {PRODUCT}</a></p>\n", e(link)));
    }
    html.push_str(&format!(
        "<p style=\"color: #667085; font-size: small;\">{PRODUCT} {} {} at {}</p>\n</body></html>\n",
        alert.kind,
        e(&alert.id),
        human_time(alert.at)
    ));

    Email { subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::message::tests::{huge, ordinary};

    #[test]
    fn email_bodies_list_the_same_facts_and_escape_html() {
        let mut alert = ordinary();
        alert.title = "run_failed: <script>alert(\"x\")</script>\r\nBcc: victim@example.com".into();
        alert.error = Some("bad <b>input</b> & 'quotes'".into());
        alert.details.push(("Note".into(), "a < b".into()));
        let mail = email(&alert);
        assert!(!mail.subject.contains(['\r', '\n']), "{}", mail.subject);
        assert!(mail.subject.starts_with("[Worker] run_failed: <script>"));
        for fact in [
            "backup.nightly",
            "01HRUN",
            "3/3",
            "agent-1",
            "high",
            "dead-runs",
            "12m 3s",
            "error: disk full",
        ] {
            assert!(mail.text.contains(fact), "text lacks {fact}");
            assert!(mail.html.contains(fact), "html lacks {fact}");
        }
        assert!(mail.text.contains("bad <b>input</b> & 'quotes'"));
        assert!(mail.text.contains("https://worker.example.com/runs/01HRUN"));
        assert!(mail.html.contains("<pre style=\"background: #f2f4f7; padding: 8px; white-space: pre-wrap; word-break: break-all;\">bad &lt;b&gt;input&lt;/b&gt; &amp; &#39;quotes&#39;</pre>"));
        assert!(mail.html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        assert!(!mail.html.contains("<script>") && !mail.html.contains("<b>"));
        assert!(mail.html.contains("<td style=\"padding: 2px 0;\">a &lt; b</td>"));
        assert!(
            mail.html
                .contains("<a href=\"https://worker.example.com/runs/01HRUN\">")
        );

        let big = email(&huge());
        assert!(big.subject.chars().count() <= EMAIL_SUBJECT_MAX && !big.subject.contains('\n'));
        assert!(big.text.contains("THE END") && big.html.contains("THE END"));
        assert!(big.text.chars().count() < 200_000);
    }
}
