//! `tokens create|list|revoke` (docs/security.md). A new token's secret is
//! printed once, by `create`; `list` never shows secrets.

use worker_proto::v1 as pb;

use super::Ctx;
use crate::cli::TokensCmd;
use crate::model::{CreatedToken, Token};
use crate::output::{Format, Table, emit, time};

/// Runs a `tokens` subcommand.
pub async fn run(ctx: &mut Ctx, cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create { name, role, expires } => {
            let expires_in_ms = expires.map_or(0, |d| (d.as_millis() as u64).max(1));
            let reply = ctx
                .client
                .create_token(pb::CreateTokenRequest {
                    name,
                    role,
                    expires_in_ms,
                })
                .await?
                .into_inner();
            let token = Token::from(reply.token.unwrap_or_default());
            let created = CreatedToken {
                name: token.name,
                role: token.role,
                token: reply.secret,
                expires_at: token.expires_at,
            };
            if reply.authentication_turned_on {
                eprintln!(
                    "note: this is the controller's first token: authentication is now on, \
                     every call needs a token (--token or WORKER_TOKEN)"
                );
            }
            if ctx.format == Format::Table {
                eprintln!("the secret is shown this once; store it now");
            }
            emit(ctx.format, &created, || format!("{}\n", created.token))
        }
        TokensCmd::List => {
            let tokens: Vec<Token> = ctx
                .client
                .list_tokens(pb::ListTokensRequest {})
                .await?
                .into_inner()
                .tokens
                .into_iter()
                .map(Token::from)
                .collect();
            emit(ctx.format, &tokens, || tokens_table(&tokens))
        }
        TokensCmd::Revoke { name } => {
            let token = Token::from(
                ctx.client
                    .revoke_token(pb::RevokeTokenRequest { name })
                    .await?
                    .into_inner(),
            );
            emit(ctx.format, &token, || tokens_table(std::slice::from_ref(&token)))
        }
    }
}

/// Tokens as a table.
fn tokens_table(tokens: &[Token]) -> String {
    let mut table = Table::new(["NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED"]);
    for t in tokens {
        table.row([
            t.name.clone(),
            t.role.clone(),
            time(t.created_at.as_deref()),
            time(t.expires_at.as_deref()),
            time(t.revoked_at.as_deref()),
        ]);
    }
    table.render()
}
