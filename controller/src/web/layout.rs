//! The page shell and the small pieces every page shares.
//!
//! [`page`] wraps a page's body in the document: head (stylesheet, script,
//! viewport for phones), the navigation (areas the caller's role may not
//! see are still listed, their actions are not), who is signed in with a
//! sign-out button, and the flash message left by the last action. Helpers
//! below render badges, times, action buttons (a one-button POST form with
//! the CSRF token and an optional confirmation), field errors, and inline
//! SVG charts, so pages stay declarative and consistent.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use super::Caller;
use super::assets;

/// The areas of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/`.
    Dashboard,
    /// `/jobs`.
    Jobs,
    /// `/runs`.
    Runs,
    /// `/queue`.
    Queue,
    /// `/dlq`.
    Dlq,
    /// `/agents`.
    Agents,
    /// `/alerts`.
    Alerts,
}

const NAV: &[(Nav, &str, &str)] = &[
    (Nav::Dashboard, "/", "Dashboard"),
    (Nav::Jobs, "/jobs", "Jobs"),
    (Nav::Runs, "/runs", "Runs"),
    (Nav::Queue, "/queue", "Queue"),
    (Nav::Dlq, "/dlq", "Dead letters"),
    (Nav::Agents, "/agents", "Agents"),
    (Nav::Alerts, "/alerts", "Alerts"),
];

fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            @if let Some(csrf) = csrf {
                meta name="csrf-token" content=(csrf);
            }
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Worker" }
            link rel="stylesheet" href=(*assets::CSS_PATH);
            link rel="icon" href="data:,";
            script src=(*assets::JS_PATH) defer {}
        }
    }
}

/// A full page for a signed-in caller: `title` is the page's heading too.
pub fn page(caller: &Caller, nav: Nav, title: &str, body: Markup) -> Response {
    let flash = caller.session.take_flash();
    let principal = caller.principal();
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, Some(caller.csrf())))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Worker" }
                    nav aria-label="Main" {
                        ul {
                            @for (area, href, label) in NAV {
                                li {
                                    a href=(href) aria-current=[(*area == nav).then_some("page")] { (label) }
                                }
                            }
                        }
                    }
                    div.who {
                        span title="signed in as" { (principal.name) " · " (principal.role) }
                        @if caller.auth_on {
                            form method="post" action="/logout" {
                                (csrf_field(caller))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main {
                    @if let Some(flash) = flash {
                        p.flash.error[flash.error] role=(if flash.error { "alert" } else { "status" }) { (flash.text) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page without navigation (sign-in).
pub fn bare_page(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title, None))
                body.bare { main #main { (body) } }
            }
        }
        .into_string(),
    )
}

/// The page of an error: its status and message, and a way back.
pub fn error_page(status: StatusCode, message: &str) -> Html<String> {
    bare_page(
        status.canonical_reason().unwrap_or("Error"),
        html! {
            div.error-page {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("Error")) }
                p role="alert" { (message) }
                p { a href="/" { "Back to the dashboard" } }
            }
        },
    )
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(caller: &Caller) -> Markup {
    html! { input type="hidden" name="csrf" value=(caller.csrf()); }
}

/// A button that POSTs to `action` with `fields`, asking `confirm` first
/// when given. `id` is the button's stable id (for browser tests and users'
/// scripts); `class` styles it (`""`, `"danger"`, `"secondary"`).
pub fn action_button(
    caller: &Caller,
    action: &str,
    id: Option<&str>,
    label: &str,
    class: &str,
    fields: &[(&str, &str)],
    confirm: Option<&str>,
) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm] {
            (csrf_field(caller))
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button id=[id] type="submit" class=(class) { (label) }
        }
    }
}

/// Redirects to `to` after an action, leaving `text` for the next page.
pub fn done(caller: &Caller, to: &str, text: impl Into<String>) -> Response {
    caller.session.flash(false, text);
    Redirect::to(to).into_response()
}

/// Redirects to `to` after a failed action, leaving the error for the next
/// page.
pub fn failed(caller: &Caller, to: &str, text: impl Into<String>) -> Response {
    caller.session.flash(true, text);
    Redirect::to(to).into_response()
}

/// A run or job state as a coloured badge (colour plus the word, never
/// colour alone).
pub fn badge(state: &str) -> Markup {
    let class = match state {
        "succeeded" | "connected" | "sent" | "enabled" | "healthy" => "ok",
        "failed" | "dead" | "timed_out" | "lost" | "disconnected" | "schedule_failed" => "bad",
        "running" | "draining" => "busy",
        "queued" | "scheduled" | "blocked" | "retrying" | "paused" | "suppressed" | "disabled" => "wait",
        _ => "plain",
    };
    html! { span class={ "badge " (class) } { (state.replace('_', " ")) } }
}

/// An RFC 3339 instant, shown as `2026-11-30 12:00:03` (UTC), its full
/// form on hover; "—" when empty.
pub fn time(rfc3339: &str) -> Markup {
    if rfc3339.is_empty() {
        return html! { span.muted { "—" } };
    }
    let short = rfc3339.get(..19).unwrap_or(rfc3339).replace('T', " ");
    html! { time datetime=(rfc3339) title=(rfc3339) { (short) } }
}

/// A duration in ms as "850 ms", "12.3 s", "4 min 5 s", "2 h 3 min".
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The error of field `name`, if `errors` has one, as a paragraph the
/// field's `aria-describedby` points at (`{name}-error`).
pub fn field_error(errors: &[(String, String)], name: &str) -> Markup {
    html! {
        @for (field, text) in errors {
            @if field == name {
                p.field-error id={ (name) "-error" } role="alert" { (text) }
            }
        }
    }
}

/// Whether `errors` has one for `name` (for `aria-invalid`).
pub fn has_error(errors: &[(String, String)], name: &str) -> bool {
    errors.iter().any(|(f, _)| f == name)
}

/// A line of durations as an inline SVG sparkline (oldest first), with its
/// values in the title for screen readers and hover.
pub fn sparkline(values: &[u64]) -> Markup {
    if values.len() < 2 {
        return html! { span.muted { "—" } };
    }
    let (w, h) = (100.0_f64, 24.0_f64);
    let max = values.iter().copied().max().unwrap_or(1).max(1) as f64;
    let step = w / (values.len() - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, h - 2.0 - (*v as f64 / max) * (h - 4.0)))
        .collect();
    let label = format!(
        "recent durations: {}",
        values.iter().map(|v| duration_ms(*v)).collect::<Vec<_>>().join(", ")
    );
    html! {
        svg.spark viewBox={ "0 0 " (w) " " (h) } width="100" height="24" role="img" aria-label=(label) {
            title { (label) }
            polyline fill="none" stroke="currentColor" stroke-width="1.5" points=(points.join(" ")) {}
        }
    }
}

/// One bar of [`bar_chart`]: a label and its stacked parts (good, bad).
#[derive(Debug, Clone)]
pub struct Bar {
    /// Shown under the bar and in its title ("14:00").
    pub label: String,
    /// Succeeded.
    pub good: u64,
    /// Failed.
    pub bad: u64,
}

/// Stacked bars (succeeded below, failed above) as an inline SVG chart,
/// with the numbers in each bar's title and a table for screen readers.
pub fn bar_chart(title: &str, bars: &[Bar]) -> Markup {
    let max = bars.iter().map(|b| b.good + b.bad).max().unwrap_or(0).max(1) as f64;
    let (w, h) = (24.0 * bars.len().max(1) as f64, 120.0);
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (w) " " (h + 14.0) } preserveAspectRatio="none" role="img" aria-label=(title) {
                @for (i, bar) in bars.iter().enumerate() {
                    @let x = i as f64 * 24.0 + 3.0;
                    @let good_h = bar.good as f64 / max * h;
                    @let bad_h = bar.bad as f64 / max * h;
                    g {
                        title { (bar.label) ": " (bar.good) " succeeded, " (bar.bad) " failed" }
                        rect.good x=(x) y=(h - good_h) width="18" height=(good_h) {}
                        rect.bad x=(x) y=(h - good_h - bad_h) width="18" height=(bad_h) {}
                        @if i % 3 == 0 {
                            text x=(x) y=(h + 12.0) { (bar.label) }
                        }
                    }
                }
            }
            figcaption { (title) " — " span.legend-good { "succeeded" } " and " span.legend-bad { "failed" } }
            table.sr-only {
                caption { (title) }
                tr { th { "hour" } th { "succeeded" } th { "failed" } }
                @for bar in bars {
                    tr { td { (bar.label) } td { (bar.good) } td { (bar.bad) } }
                }
            }
        }
    }
}

/// A note for an empty list.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_300), "12.3 s");
        assert_eq!(duration_ms(245_000), "4 min 5 s");
        assert_eq!(duration_ms(7_380_000), "2 h 3 min");
    }

    #[test]
    fn badges_and_times_escape_and_shorten() {
        assert_eq!(
            badge("<b>").into_string(),
            "<span class=\"badge plain\">&lt;b&gt;</span>"
        );
        assert!(
            time("2026-11-30T12:00:03.123Z")
                .into_string()
                .contains(">2026-11-30 12:00:03<")
        );
        assert!(time("").into_string().contains("—"));
    }

    #[test]
    fn error_pages_escape_the_message() {
        let page = error_page(StatusCode::BAD_REQUEST, "<script>alert(1)</script>").0;
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script>alert"));
    }
}
