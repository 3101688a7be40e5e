//! The `omnigate` binary: `serve`, `demo`, `send`, `cancel`, `get`, `events`, `consent`,
//! `opt-outs`, `contact`, `check-config`, `migrate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use omnigate::{Config, Gateway};
use omnigate_proto::pbjson_types as pb_types;
use omnigate_proto::v1 as pb;
use omnigate_proto::v1::gateway_client::GatewayClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(name = "omnigate", version, about = "Headless omnichannel messaging gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway until SIGTERM or Ctrl-C, then drains.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Runs the gateway on the sandbox, sends one SMS and shows it reach DELIVERED.
    Demo {
        #[command(flatten)]
        config: ConfigArg,
        /// `sms` and `whatsapp` (a template, as outside the 24 h window) go on to
        /// DELIVERED by the sandbox's receipts; `email` ends at SENT, when the SMTP sandbox
        /// took it (email has no receipts unless a DSN comes back).
        #[arg(long, value_enum, default_value = "sms")]
        channel: ChannelArg,
        /// Default: +14155550100 for SMS and WhatsApp, ann@example.com for email.
        #[arg(long)]
        to: Option<String>,
    },
    /// Sends one message through a running gateway's gRPC API.
    Send {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, value_enum, default_value = "sms")]
        channel: ChannelArg,
        #[arg(long)]
        to: String,
        /// The text body.
        #[arg(long)]
        text: Option<String>,
        /// A media URL (MMS); --text becomes its caption.
        #[arg(long)]
        media_url: Option<String>,
        /// Email: the subject (default: "Re: " the conversation's, else the text's first line).
        #[arg(long)]
        subject: Option<String>,
        /// A metadata entry, KEY=VALUE; repeatable. Events and webhooks carry it.
        #[arg(long = "metadata", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        account: String,
        #[arg(long, default_value = "")]
        idempotency_key: String,
        /// Send it this many seconds from now rather than at once (`send_at`).
        #[arg(long)]
        after_secs: Option<u64>,
        /// Follow the message's events until it is delivered or fails.
        #[arg(long)]
        wait: bool,
    },
    /// Cancels a message its provider does not have yet, through a running gateway.
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        /// The message id (`msg_...`).
        id: String,
    },
    /// Prints a message with its status history, as proto3 JSON, from a running gateway.
    Get {
        #[command(flatten)]
        api: ApiArgs,
        /// The message id (`msg_...`).
        id: String,
    },
    /// Lists a WhatsApp account's message templates (`ListTemplates`), one JSON line each.
    Templates {
        #[command(flatten)]
        api: ApiArgs,
        /// The WhatsApp account; default: the channel's default account.
        #[arg(long, default_value = "")]
        account: String,
        /// Only the templates of this name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Tells the person their message was read (`MarkRead`): WhatsApp, Messenger, Instagram.
    MarkRead {
        #[command(flatten)]
        api: ApiArgs,
        /// The inbound message id (`msg_...`).
        id: String,
        /// Also show them a typing indicator.
        #[arg(long)]
        typing: bool,
    },
    /// Saves media a person sent (`GetMedia`), fetched from its provider.
    Media {
        #[command(flatten)]
        api: ApiArgs,
        /// The inbound message id (`msg_...`).
        id: String,
        /// Which item of a message carrying several (an MMS); 0 is the first.
        #[arg(long, default_value_t = 0)]
        index: u32,
        /// Where to write it; `-` for standard output. Written whole or not at all.
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints a conversation's history, oldest first, one proto3 JSON message per line.
    History {
        #[command(flatten)]
        api: ApiArgs,
        /// The conversation id (`cnv_...`), as on every message.
        conversation_id: String,
    },
    /// Prints a running gateway's events as they are committed, one proto3 JSON line each.
    Events {
        #[command(flatten)]
        api: ApiArgs,
        /// Replay the events after this sequence first (0: from the oldest kept); without
        /// it, only what happens from now on.
        #[arg(long)]
        from: Option<u64>,
        /// Only events of this kind (`message_status_changed`, `message_received`, ...);
        /// repeat for more.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Records that a person opted out of an account's messages (`--out`) or back in
    /// (`--in`), through a running gateway.
    Consent {
        #[command(flatten)]
        api: ApiArgs,
        /// The person's address on the channel.
        address: String,
        #[arg(long, value_enum, default_value = "sms")]
        channel: ChannelArg,
        /// Default: the channel's default account.
        #[arg(long, default_value = "")]
        account: String,
        #[arg(long = "out", conflicts_with = "opted_in", required_unless_present = "opted_in")]
        opted_out: bool,
        #[arg(long = "in")]
        opted_in: bool,
        /// How the person said it, kept with an opt-out.
        #[arg(long, default_value = "")]
        reason: String,
        /// An opt-out of marketing messages alone: recorded and reported, no bar.
        #[arg(long, requires = "opted_out")]
        marketing_only: bool,
    },
    /// Prints the bars on an account's sends (opt-outs and hard bounces), one proto3 JSON
    /// object per line, by account and then address: the suppression list, for export.
    OptOuts {
        #[command(flatten)]
        api: ApiArgs,
        /// Default: every account's.
        #[arg(long, default_value = "")]
        account: String,
    },
    /// Manages CRM webhook subscriptions of a running gateway.
    Webhooks {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: WebhookAction,
    },
    /// Prints a contact (identities, preferences, opt-outs) as proto3 JSON, from a running
    /// gateway: by id (`ctc_...`), or by an address on `--channel`.
    Contact {
        #[command(flatten)]
        api: ApiArgs,
        /// A contact id, or the person's address on the channel.
        who: String,
        #[arg(long, value_enum, default_value = "sms")]
        channel: ChannelArg,
    },
    /// Loads and validates a config, then prints it with secrets redacted.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Creates or upgrades the configured store, then exits.
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Copies the embedded SQLite store to a new file, also while the gateway runs on it.
    Backup {
        #[command(flatten)]
        config: ConfigArg,
        /// The new file; an existing one is never overwritten.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ChannelArg {
    Sms,
    Whatsapp,
    Messenger,
    Instagram,
    Email,
}

impl From<ChannelArg> for pb::Channel {
    fn from(c: ChannelArg) -> Self {
        match c {
            ChannelArg::Sms => pb::Channel::Sms,
            ChannelArg::Whatsapp => pb::Channel::Whatsapp,
            ChannelArg::Messenger => pb::Channel::Messenger,
            ChannelArg::Instagram => pb::Channel::Instagram,
            ChannelArg::Email => pb::Channel::Email,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omnigate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("omnigate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
enum WebhookAction {
    /// Prints every subscription, one proto3 JSON object per line (without secrets).
    List,
    /// Subscribes a URL; prints the subscription with its signing secret, shown only now.
    Add {
        url: String,
        /// An event kind to deliver (repeatable); default: every kind.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Deliver events after this sequence (0: the whole log); default: from now on.
        #[arg(long)]
        from: Option<u64>,
        /// The signing secret ("whsec_" + base64), better from the environment than on a
        /// command line others can list; default: a new random one.
        #[arg(long, default_value = "", env = "OMNIGATE_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Deliver each event on its own, retrying a failed one while later ones go on
        /// (order not kept); default: one at a time, in order.
        #[arg(long)]
        independent: bool,
    },
    /// Removes a subscription.
    Delete { id: String },
    /// Delivers again every event after `--from`, and re-enables a disabled subscription.
    Replay {
        id: String,
        #[arg(long)]
        from: u64,
    },
    /// Prints the events a subscription gave up on, one proto3 JSON object per line.
    DeadLetters { id: String },
    /// Gives a subscription a new signing secret, printed only now; the old one also signs
    /// for `--grace-hours` more, while receivers switch.
    Rotate {
        id: String,
        /// Hours the old secret keeps signing (0: none, for a secret that leaked; at most 168).
        #[arg(long, default_value_t = 24)]
        grace_hours: u32,
        /// The new secret ("whsec_" + base64); default: a new random one.
        #[arg(long, default_value = "", env = "OMNIGATE_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
    },
    /// Changes a subscription in place: its id, secret, cursor and waiting retries stay.
    Update {
        id: String,
        /// Where events go from now on.
        #[arg(long)]
        url: Option<String>,
        /// An event kind to deliver from now on (repeatable), instead of the ones before.
        #[arg(long = "kind", conflicts_with = "all_kinds")]
        kinds: Vec<String>,
        /// Deliver every kind of event from now on.
        #[arg(long)]
        all_kinds: bool,
        #[arg(long, value_enum)]
        delivery: Option<Delivery>,
        /// Stop delivering; events wait after the cursor until `--resume`.
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        /// Deliver again, from the cursor on (a replay instead starts where it is told).
        #[arg(long)]
        resume: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Delivery {
    /// One event at a time, in sequence order.
    InOrder,
    /// Each event on its own; a failed one is retried while later ones go on.
    Independent,
}

impl From<Delivery> for pb::WebhookDelivery {
    fn from(d: Delivery) -> Self {
        match d {
            Delivery::InOrder => pb::WebhookDelivery::InOrder,
            Delivery::Independent => pb::WebhookDelivery::Independent,
        }
    }
}

/// Where the config comes from.
#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML config, which must exist [default: config/omnigate.toml when it exists,
    /// else built-in defaults]. OMNIGATE_* variables override either.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// A path given that does not exist is an error, not the defaults: a mistyped path
    /// would otherwise run a production gateway on the sandbox.
    fn load(&self) -> anyhow::Result<Config> {
        let default = std::path::Path::new("config/omnigate.toml");
        let path = self.config.as_deref().or_else(|| default.exists().then_some(default));
        Ok(Config::load(path)?)
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => {
            let config = config.load()?;
            let telemetry = omnigate::telemetry::init(&config.log, &config.telemetry)?;
            let gateway = Gateway::start(config).await?;
            wait_for_signal().await?;
            tracing::info!("draining");
            let drained = gateway.shutdown().await?;
            telemetry.shutdown().await;
            Ok(if drained { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Demo { config, channel, to } => demo(config.load()?, channel.into(), to).await,
        Command::Send {
            api,
            channel,
            to,
            text,
            media_url,
            subject,
            metadata,
            account,
            idempotency_key,
            after_secs,
            wait,
        } => {
            let content = match (media_url, text, subject) {
                (Some(_), _, Some(_)) => anyhow::bail!("--subject goes with --text, for email"),
                (Some(url), caption, None) => pb::content::Kind::Media(pb::Media {
                    url,
                    caption: caption.unwrap_or_default(),
                    ..Default::default()
                }),
                (None, Some(text), Some(subject)) => {
                    pb::content::Kind::Email(pb::Email { subject, text, ..Default::default() })
                }
                (None, Some(body), None) => {
                    pb::content::Kind::Text(pb::Text { body, preview_url: false })
                }
                (None, None, _) => anyhow::bail!("give --text or --media-url"),
            };
            let mut client = api.connect().await?;
            let mut statuses = match wait {
                true => Some(watch(&mut client).await?),
                false => None,
            };
            let send_at = after_secs.map(|secs| {
                let at = std::time::SystemTime::now() + Duration::from_secs(secs);
                let unix = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                pb_types::Timestamp { seconds: unix.as_secs() as i64, nanos: 0 }
            });
            let request = pb::SendMessageRequest {
                send_at,
                idempotency_key,
                channel: pb::Channel::from(channel) as i32,
                to,
                account,
                content: Some(pb::Content { kind: Some(content) }),
                metadata: metadata.into_iter().collect(),
                ..Default::default()
            };
            let message =
                client.send_message(request).await?.into_inner().message.context("empty answer")?;
            show(&message);
            let Some(statuses) = &mut statuses else { return Ok(ExitCode::SUCCESS) };
            let done = match channel {
                ChannelArg::Email => pb::MessageStatus::Sent,
                _ => pb::MessageStatus::Delivered,
            };
            Ok(exit_code(follow(statuses, &message, done).await?, done))
        }
        Command::Get { api, id } => {
            let request = pb::GetMessageRequest { id };
            let answer = api.connect().await?.get_message(request).await?.into_inner();
            let message = answer.message.context("empty answer")?;
            println!("{}", serde_json::to_string_pretty(&message)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Templates { api, account, name } => {
            let mut client = api.connect().await?;
            print_pages(async |page_token| {
                let request = pb::ListTemplatesRequest {
                    account: account.clone(),
                    name: name.clone(),
                    page_size: 0,
                    page_token,
                };
                let page = client.list_templates(request).await?.into_inner();
                Ok((page.templates, page.next_page_token))
            })
            .await
        }
        Command::MarkRead { api, id, typing } => {
            let request = pb::MarkReadRequest { message_id: id, typing };
            api.connect().await?.mark_read(request).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Media { api, id, index, out } => {
            let request = pb::GetMediaRequest { message_id: id, index };
            let chunks = api.connect().await?.get_media(request).await?.into_inner();
            save_media(chunks, &out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { api, from, kinds, count } => {
            let request = pb::StreamEventsRequest {
                from_sequence: from.unwrap_or(0),
                kinds,
                from_now: from.is_none(),
            };
            let mut events = api.connect().await?.stream_events(request).await?.into_inner();
            let mut printed = 0;
            while count.is_none_or(|count| printed < count) {
                let Some(event) = events.message().await? else { break };
                println!("{}", serde_json::to_string(&event)?);
                printed += 1;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { api, id } => {
            let mut client = api.connect().await?;
            let request = pb::CancelMessageRequest { id };
            let message = client
                .cancel_message(request)
                .await?
                .into_inner()
                .message
                .context("empty answer")?;
            println!("{} {}", message.id, status_name(message.status));
            Ok(ExitCode::SUCCESS)
        }
        Command::Consent {
            api,
            address,
            channel,
            account,
            opted_out,
            opted_in: _,
            reason,
            marketing_only,
        } => {
            let channel = pb::Channel::from(channel) as i32;
            let request = pb::SetConsentRequest {
                identity: Some(pb::Identity { channel, address }),
                account,
                opted_out,
                reason,
                marketing_only,
            };
            let answer = api.connect().await?.set_consent(request).await?.into_inner();
            let now = if opted_out { "opted out" } else { "opted in" };
            let change = if answer.changed { "now" } else { "already" };
            println!("{} {change} {now}", answer.contact_id);
            Ok(ExitCode::SUCCESS)
        }
        Command::OptOuts { api, account } => {
            let mut client = api.connect().await?;
            print_pages(async |page_token| {
                let request =
                    pb::ListOptOutsRequest { account: account.clone(), page_size: 0, page_token };
                let page = client.list_opt_outs(request).await?.into_inner();
                Ok((page.opt_outs, page.next_page_token))
            })
            .await
        }
        Command::History { api, conversation_id } => {
            let mut client = api.connect().await?;
            print_pages(async |page_token| {
                let request = pb::ListMessagesRequest {
                    conversation_id: conversation_id.clone(),
                    page_size: 0,
                    page_token,
                };
                let page = client.list_messages(request).await?.into_inner();
                Ok((page.messages, page.next_page_token))
            })
            .await
        }
        Command::Webhooks { api, action } => {
            let mut client = api.connect().await?;
            let shown = match action {
                WebhookAction::List => {
                    let all = client.list_webhooks(pb::ListWebhooksRequest {}).await?;
                    for webhook in &all.into_inner().webhooks {
                        println!("{}", serde_json::to_string(webhook)?);
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                WebhookAction::Add { url, kinds, from, secret, independent } => {
                    let delivery = if independent {
                        pb::WebhookDelivery::Independent
                    } else {
                        pb::WebhookDelivery::InOrder
                    };
                    let request = pb::CreateWebhookRequest {
                        url,
                        secret,
                        kinds,
                        from_sequence: from.unwrap_or(0),
                        from_now: from.is_none(),
                        delivery: delivery as i32,
                    };
                    client.create_webhook(request).await?.into_inner()
                }
                WebhookAction::Delete { id } => {
                    client.delete_webhook(pb::DeleteWebhookRequest { id: id.clone() }).await?;
                    println!("{id} deleted");
                    return Ok(ExitCode::SUCCESS);
                }
                WebhookAction::Replay { id, from } => {
                    let request = pb::ReplayWebhookRequest { id, from_sequence: from };
                    client.replay_webhook(request).await?.into_inner()
                }
                WebhookAction::DeadLetters { id } => {
                    let mut page_token = String::new();
                    loop {
                        let request = pb::ListWebhookDeadLettersRequest {
                            webhook_id: id.clone(),
                            page_size: 500,
                            page_token,
                        };
                        let page = client.list_webhook_dead_letters(request).await?.into_inner();
                        for dead in &page.dead_letters {
                            println!("{}", serde_json::to_string(dead)?);
                        }
                        if page.next_page_token.is_empty() {
                            return Ok(ExitCode::SUCCESS);
                        }
                        page_token = page.next_page_token;
                    }
                }
                WebhookAction::Rotate { id, grace_hours, secret } => {
                    let grace = omnigate_proto::pbjson_types::Duration {
                        seconds: i64::from(grace_hours) * 3600,
                        nanos: 0,
                    };
                    let request = pb::RotateWebhookSecretRequest { id, secret, grace: Some(grace) };
                    client.rotate_webhook_secret(request).await?.into_inner()
                }
                WebhookAction::Update { id, url, kinds, all_kinds, delivery, pause, resume } => {
                    let mut paths = Vec::new();
                    let mut webhook = pb::Webhook { id, ..Default::default() };
                    if let Some(url) = url {
                        webhook.url = url;
                        paths.push("url");
                    }
                    if all_kinds || !kinds.is_empty() {
                        webhook.kinds = kinds;
                        paths.push("kinds");
                    }
                    if let Some(delivery) = delivery {
                        webhook.delivery = pb::WebhookDelivery::from(delivery) as i32;
                        paths.push("delivery");
                    }
                    if pause || resume {
                        webhook.state = if pause {
                            pb::WebhookState::Disabled
                        } else {
                            pb::WebhookState::Active
                        } as i32;
                        paths.push("state");
                    }
                    if paths.is_empty() {
                        anyhow::bail!(
                            "nothing to change: give --url, --kind, --all-kinds, --delivery, --pause or --resume"
                        );
                    }
                    let update_mask = omnigate_proto::pbjson_types::FieldMask {
                        paths: paths.into_iter().map(String::from).collect(),
                    };
                    let request = pb::UpdateWebhookRequest {
                        webhook: Some(webhook),
                        update_mask: Some(update_mask),
                    };
                    client.update_webhook(request).await?.into_inner()
                }
            };
            println!("{}", serde_json::to_string(&shown)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Contact { api, who, channel } => {
            let mut client = api.connect().await?;
            let contact = if who.starts_with("ctc_") {
                client.get_contact(pb::GetContactRequest { id: who }).await?
            } else {
                let identity =
                    pb::Identity { channel: pb::Channel::from(channel) as i32, address: who };
                client.find_contact(pb::FindContactRequest { identity: Some(identity) }).await?
            };
            println!("{}", serde_json::to_string_pretty(&contact.into_inner())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            let loaded = config.load()?;
            println!("{loaded:#?}");
            println!("config OK: {} account(s)", loaded.accounts.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { config, to } => {
            let config = config.load()?;
            let Some(omnigate::config::Backend::Sqlite(path)) = config.backend() else {
                anyhow::bail!(
                    "the store is PostgreSQL, which its own tools back up (pg_dump, or continuous archiving)"
                );
            };
            let size = omnigate::store::sqlite::backup(path, &to)?;
            println!("{path} copied to {} ({size} bytes)", to.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let config = config.load()?;
            let node = omnigate::app::node_id(&config);
            let store = omnigate::app::open_store(&config, &node, Default::default(), true).await?;
            store.close().await;
            // The URL may carry a password: name the backend only.
            let backend = match config.backend() {
                Some(omnigate::config::Backend::Postgres(_)) => "PostgreSQL",
                _ => "SQLite",
            };
            println!("{backend} store is up to date");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}

/// Runs the gateway on free ports and a scratch store, sends one message, and prints each
/// status it passes through.
async fn demo(
    mut config: Config,
    channel: pb::Channel,
    to: Option<String>,
) -> anyhow::Result<ExitCode> {
    let text =
        |body: &str| pb::content::Kind::Text(pb::Text { body: body.into(), preview_url: false });
    let (to, content, done) = match channel {
        pb::Channel::Email => (
            to.unwrap_or_else(|| "ann@example.com".into()),
            text("Hello from omnigate"),
            pb::MessageStatus::Sent,
        ),
        // Nobody wrote first, so only a template may go (Meta's own starter template).
        pb::Channel::Whatsapp => (
            to.unwrap_or_else(|| "+14155550100".into()),
            pb::content::Kind::Template(pb::Template {
                name: "hello_world".into(),
                language: "en_US".into(),
                components: Vec::new(),
            }),
            pb::MessageStatus::Delivered,
        ),
        pb::Channel::Sms => (
            to.unwrap_or_else(|| "+14155550100".into()),
            text("Hello from omnigate"),
            pb::MessageStatus::Delivered,
        ),
        other => anyhow::bail!(
            "the demo sends on sms, whatsapp or email; {} needs the person to write first",
            other.as_str_name()
        ),
    };
    let dir = std::env::temp_dir().join(format!("omnigate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    config.store.url = format!("sqlite://{}", dir.join("demo.db").display());
    config.server.grpc_addr = "127.0.0.1:0".parse()?;
    config.server.http_addr = "127.0.0.1:0".parse()?;
    config.server.public_url.clear();
    // The demo's gateway listens on loopback only, for its own client.
    config.server.api_tokens.clear();
    config.server.tls_cert_file = None;
    config.server.tls_key_file = None;
    config.server.tls_client_ca_file = None;
    let gateway = Gateway::start(config).await?;
    let tls = TlsArgs { ca_file: None, cert_file: None, key_file: None };
    let mut client = connect(format!("http://{}", gateway.grpc_addr), None, &tls).await?;
    let mut statuses = watch(&mut client).await?;
    println!(
        "gateway on {} (gRPC) and {} (HTTP), sandbox providers",
        gateway.grpc_addr, gateway.http_addr
    );
    let request = pb::SendMessageRequest {
        channel: channel as i32,
        to,
        content: Some(pb::Content { kind: Some(content) }),
        ..Default::default()
    };
    let message =
        client.send_message(request).await?.into_inner().message.context("empty answer")?;
    show(&message);
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), follow(&mut statuses, &message, done)).await;
    gateway.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(Ok(status)) => Ok(exit_code(status, done)),
        Ok(Err(e)) => Err(e),
        Err(_) => anyhow::bail!("no final status within 30 s"),
    }
}

/// Adds `authorization: Bearer TOKEN` to every call, when there is a token.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = GatewayClient<InterceptedService<Channel, Bearer>>;

/// Where a running gateway's API is, and how to get in; global, so that they may follow a
/// subcommand's own (`webhooks add URL --addr ...`).
#[derive(clap::Args)]
struct ApiArgs {
    /// The gateway's gRPC address.
    #[arg(global = true, long, default_value = "http://127.0.0.1:50051", env = "OMNIGATE_ADDR")]
    addr: String,
    /// One of the gateway's `server.api_tokens`, when it has any.
    #[arg(global = true, long, env = "OMNIGATE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

impl ApiArgs {
    async fn connect(self) -> anyhow::Result<Client> {
        connect(self.addr, self.token.as_deref(), &self.tls).await
    }
}

/// How a client reaches a gateway served over TLS (an `https://` address).
#[derive(clap::Args)]
struct TlsArgs {
    /// PEM CA certificates to trust beside the system's roots.
    #[arg(global = true, long)]
    ca_file: Option<PathBuf>,
    /// A PEM client certificate and its key, for a gateway that asks for one.
    #[arg(global = true, long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    #[arg(global = true, long, requires = "cert_file")]
    key_file: Option<PathBuf>,
}

async fn connect(addr: String, token: Option<&str>, tls: &TlsArgs) -> anyhow::Result<Client> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let bearer = token
        .map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>())
        .transpose()
        .context("the API token must be printable ASCII")?;
    let mut endpoint =
        Channel::from_shared(addr.clone()).with_context(|| format!("{addr} is not a URL"))?;
    if addr.starts_with("https://") {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &tls.ca_file {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(config)?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("connecting to {addr}"))?;
    // A conversation's page of inbound emails may carry more attachment bytes than gRPC's
    // customary 4 MiB; the CLI reads whatever the gateway answers.
    Ok(GatewayClient::with_interceptor(channel, Bearer(bearer))
        .max_decoding_message_size(usize::MAX))
}

/// Status changes from now on: opened before sending, so that none is missed, and without
/// replaying the whole event log.
async fn watch(client: &mut Client) -> anyhow::Result<tonic::Streaming<pb::Event>> {
    let request = pb::StreamEventsRequest {
        kinds: vec!["message_status_changed".into()],
        from_now: true,
        ..Default::default()
    };
    Ok(client.stream_events(request).await?.into_inner())
}

/// Prints the status changes of `sent` after the one already shown, until it reaches
/// `done` or a terminal status.
async fn follow(
    events: &mut tonic::Streaming<pb::Event>,
    sent: &pb::Message,
    done: pb::MessageStatus,
) -> anyhow::Result<pb::MessageStatus> {
    let finished = |status: pb::MessageStatus| {
        status == done
            || matches!(
                status,
                pb::MessageStatus::Delivered
                    | pb::MessageStatus::Read
                    | pb::MessageStatus::Failed
                    | pb::MessageStatus::Canceled
                    | pb::MessageStatus::Expired
            )
    };
    let mut shown = pb::MessageStatus::try_from(sent.status).unwrap_or_default();
    while !finished(shown) {
        let Some(event) = events.message().await? else { anyhow::bail!("the event stream ended") };
        let Some(pb::event::Kind::MessageStatusChanged(change)) = event.kind else { continue };
        let Some(message) = change.message.filter(|m| m.id == sent.id) else { continue };
        let status = pb::MessageStatus::try_from(message.status).unwrap_or_default();
        if status == shown {
            continue;
        }
        show(&message);
        shown = status;
    }
    Ok(shown)
}

/// Prints every item of a paged listing, one JSON line each, asking `page` for the page
/// after each token until the next token is empty.
async fn print_pages<T: serde::Serialize>(
    mut page: impl AsyncFnMut(String) -> anyhow::Result<(Vec<T>, String)>,
) -> anyhow::Result<ExitCode> {
    let mut token = String::new();
    loop {
        let (items, next) = page(token).await?;
        for item in &items {
            println!("{}", serde_json::to_string(item)?);
        }
        if next.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        token = next;
    }
}

/// Writes a `GetMedia` stream to `out` (`-`: standard output), through a `.part` file
/// renamed at the end, so that a fetch that fails midway leaves no truncated file behind.
async fn save_media(
    mut chunks: tonic::Streaming<pb::MediaChunk>,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    let to_stdout = out.as_os_str() == "-";
    let part = std::path::PathBuf::from({
        let mut name = out.as_os_str().to_owned();
        name.push(".part");
        name
    });
    let mut sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?,
        )
    };
    let (mut mime_type, mut written) = (String::new(), 0u64);
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = chunks.message().await? {
            if mime_type.is_empty() {
                mime_type = chunk.mime_type;
            }
            sink.write_all(&chunk.data)?;
            written += chunk.data.len() as u64;
        }
        Ok(sink.flush()?)
    }
    .await;
    drop(sink);
    if let Err(e) = copied {
        if !to_stdout {
            let _ = std::fs::remove_file(&part);
        }
        return Err(e);
    }
    if !to_stdout {
        std::fs::rename(&part, out).with_context(|| format!("writing {}", out.display()))?;
    }
    eprintln!("{written} bytes of {mime_type} to {}", out.display());
    Ok(())
}

fn key_value(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((key.to_string(), value.to_string()))
}

/// One line for a message's status, with why it failed when it did.
fn show(message: &pb::Message) {
    let detail = match &message.error {
        Some(e) if e.provider.is_empty() => format!(" ({}: {})", error_name(e.code), e.message),
        Some(e) => format!(" ({} {}: {})", e.provider, e.provider_code, e.message),
        None => String::new(),
    };
    println!("{} {}{detail}", message.id, status_name(message.status));
}

/// 0 when the message got as far as `done` (or further: delivered, read), 3 when it ended
/// short of it (failed, canceled, expired), so that scripts can tell.
fn exit_code(status: pb::MessageStatus, done: pb::MessageStatus) -> ExitCode {
    let reached =
        status == done || matches!(status, pb::MessageStatus::Delivered | pb::MessageStatus::Read);
    if reached { ExitCode::SUCCESS } else { ExitCode::from(3) }
}

fn error_name(code: i32) -> &'static str {
    pb::ErrorCode::try_from(code).map(|c| c.as_str_name()).unwrap_or("ERROR_CODE_UNKNOWN")
}

fn status_name(status: i32) -> &'static str {
    pb::MessageStatus::try_from(status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN")
}
