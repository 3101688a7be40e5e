//! `GetMedia` through the real gateway and the provider sandboxes: media people sent on
//! WhatsApp (by media id), as an MMS (Twilio Media resources behind HTTP auth, redirecting
//! to a CDN) and on Messenger (attachment URLs), streamed back in chunks; and the refusals.

use omnigate_proto::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::support::{self, FROM, PAGE_ID, WA_NUMBER_ID, text};

/// Bytes that show where a chunk was cut or an item swapped: each position differs.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

/// Streams item `index` of message `id`: the chunks, or the status that ended the stream.
async fn fetch(
    t: &mut support::TestGateway,
    id: &str,
    index: u32,
) -> Result<Vec<pb::MediaChunk>, tonic::Status> {
    let request = pb::GetMediaRequest { message_id: id.into(), index };
    let mut stream = t.client.get_media(request).await?.into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await? {
        chunks.push(chunk);
    }
    Ok(chunks)
}

fn joined(chunks: &[pb::MediaChunk]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.data.iter().copied()).collect()
}

/// Meta's media lookup (`GET /{version}/{media-id}`) and its download URL both need the
/// account's token (OpenAPI `retrieveMediaUrl`, `downloadMedia`); the sandbox refuses
/// either without it, so these bytes arriving shows the gateway presented it to both.
#[tokio::test]
async fn whatsapp_media_comes_by_its_media_id_in_chunks() {
    let mut t = support::gateway().start().await;
    let photo = pattern(200_000, 7);
    let media_id = t.meta().keep_media("image/jpeg", &photo);
    let person = "16315550701";
    let code = t
        .meta()
        .whatsapp_inbound(
            WA_NUMBER_ID,
            json!({
                "from": person, "id": "wamid.PHOTO", "timestamp": "1700000000", "type": "image",
                "image": { "id": media_id, "mime_type": "image/jpeg", "sha256": "x", "caption": "the dent" }
            }),
        )
        .await
        .expect("post");
    assert_eq!(code, 200);
    let inbound = t.received("wamid.PHOTO").await;

    let chunks = fetch(&mut t, &inbound.id, 0).await.expect("fetched");
    assert_eq!(joined(&chunks), photo);
    assert_eq!(chunks[0].mime_type, "image/jpeg");
    assert_eq!(chunks[0].size, 200_000, "the size the lookup and the download announced");
    assert!(chunks.len() >= 4, "200 kB in chunks of at most 64 KiB: {}", chunks.len());
    assert!(chunks.iter().all(|c| c.data.len() <= 64 * 1024));

    let past = fetch(&mut t, &inbound.id, 1).await.expect_err("one item only");
    assert_eq!(past.code(), Code::OutOfRange, "{past:?}");

    // Media Meta no longer keeps: its lookup answers code 100, subcode 33.
    let code = t
        .meta()
        .whatsapp_inbound(
            WA_NUMBER_ID,
            json!({
                "from": person, "id": "wamid.OLD", "timestamp": "1700000001", "type": "audio",
                "audio": { "id": "999000111", "mime_type": "audio/ogg" }
            }),
        )
        .await
        .expect("post");
    assert_eq!(code, 200);
    let old = t.received("wamid.OLD").await;
    let gone = fetch(&mut t, &old.id, 0).await.expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    assert!(gone.message().contains("100/33"), "the provider's code is kept: {gone:?}");

    // Not inbound media: a text, an outbound message, no message at all.
    let words = support::request(pb::Channel::Whatsapp, "+16315550701", text("got it"));
    let ours = t.send_request(words).await.expect("accepted");
    let outbound = fetch(&mut t, &ours.id, 0).await.expect_err("outbound");
    assert_eq!(outbound.code(), Code::FailedPrecondition, "{outbound:?}");
    assert!(outbound.message().contains("outbound"), "{outbound:?}");
    let missing = fetch(&mut t, "msg_nope", 0).await.expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
}

/// An MMS's `MediaUrl{N}` need the account's Basic credentials and redirect to a CDN that
/// refuses any (as a pre-signed URL does): both items arriving shows the credentials went
/// to Twilio's host and not across the redirect.
#[tokio::test]
async fn mms_items_are_fetched_with_credentials_that_stay_on_twilios_host() {
    let mut t = support::gateway().start().await;
    let (photo, clip) = (pattern(90_000, 1), pattern(5_000, 2));
    let inbound_url = t.url("/webhooks/twilio/sms/inbound");
    let media: &[(&str, &[u8])] = &[("image/png", &photo), ("video/mp4", &clip)];
    let (code, sid) = t
        .sandbox()
        .deliver_inbound_mms(&inbound_url, "+14155550702", FROM, "see these", media)
        .await
        .expect("post");
    assert_eq!(code, 200);
    let inbound = t.received(&sid).await;

    let first = fetch(&mut t, &inbound.id, 0).await.expect("first item");
    assert_eq!(joined(&first), photo);
    assert_eq!(first[0].mime_type, "image/png");
    let second = fetch(&mut t, &inbound.id, 1).await.expect("second item");
    assert_eq!(joined(&second), clip);
    assert_eq!(second[0].mime_type, "video/mp4");
    let past = fetch(&mut t, &inbound.id, 2).await.expect_err("two items");
    assert_eq!(past.code(), Code::OutOfRange);
    assert!(past.message().contains("2 media item(s)"), "{past:?}");

    // A plain SMS carries no media.
    let (_, sid) = t
        .sandbox()
        .deliver_inbound_mms(&inbound_url, "+14155550702", FROM, "just words", &[])
        .await
        .expect("post");
    let words = t.received(&sid).await;
    let refused = fetch(&mut t, &words.id, 0).await.expect_err("text");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("text content"), "{refused:?}");
}

/// A Messenger attachment carries its own URL; the CLI saves it whole to a file.
#[tokio::test]
async fn messenger_attachments_come_from_their_url_and_the_cli_saves_them() {
    let mut t = support::gateway().start().await;
    let file = pattern(70_000, 9);
    let url = t.meta().attachment_url("application/pdf", &file);
    let code = t
        .meta()
        .messaging_inbound(
            PAGE_ID,
            "6245120000000703",
            json!({ "mid": "m_file", "attachments": [{ "type": "file", "payload": { "url": url } }] }),
        )
        .await
        .expect("post");
    assert_eq!(code, 200);
    let inbound = t.received("m_file").await;
    let chunks = fetch(&mut t, &inbound.id, 0).await.expect("fetched");
    assert_eq!(joined(&chunks), file);
    assert_eq!(chunks[0].mime_type, "application/pdf");

    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("statement.pdf");
    let addr = format!("http://{}", t.gw().grpc_addr);
    let saved = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(["media", &inbound.id, "--out"])
        .arg(&out)
        .args(["--addr", &addr])
        .output()
        .await
        .expect("runs");
    assert!(saved.status.success(), "{saved:?}");
    assert_eq!(std::fs::read(&out).expect("saved"), file);
    assert!(String::from_utf8_lossy(&saved.stderr).contains("70000 bytes of application/pdf"));

    // A refused fetch fails the command and leaves no file, whole or partial.
    let bad = dir.path().join("nothing.pdf");
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(["media", &inbound.id, "--index", "3", "--out"])
        .arg(&bad)
        .args(["--addr", &addr])
        .output()
        .await
        .expect("runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("past them"), "{refused:?}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "only statement.pdf");
}

/// A download that stalls does not hold a draining gateway: its stream ends with
/// `UNAVAILABLE` (fetch again) and the gateway stops.
#[tokio::test]
async fn a_stalled_download_does_not_hold_the_drain() {
    let mut t = support::gateway().start().await;
    let url = t.meta().stalling_attachment_url("video/mp4", &pattern(1000, 3));
    let event = json!({ "mid": "m_stall", "attachments": [{ "type": "video", "payload": { "url": url } }] });
    let code = t.meta().messaging_inbound(PAGE_ID, "6245120000000704", event).await.expect("post");
    assert_eq!(code, 200);
    let inbound = t.received("m_stall").await;
    let request = pb::GetMediaRequest { message_id: inbound.id.clone(), index: 0 };
    let mut stream = t.client.get_media(request).await.expect("started").into_inner();
    let reader = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    tokio::time::timeout(std::time::Duration::from_secs(20), t.stop())
        .await
        .expect("the drain does not wait for the stalled download");
    let ended = reader.await.expect("task").expect_err("cut short");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("fetch the media again"), "{ended:?}");
}

/// Forgetting a person deletes what providers keep of the media they sent (Twilio keeps MMS
/// media until deleted, Meta WhatsApp media for 30 days) before erasing the messages; media
/// already gone counts as deleted.
#[tokio::test]
async fn forgetting_a_person_deletes_their_media_at_the_providers() {
    let mut t = support::gateway().start().await;
    let inbound_url = t.url("/webhooks/twilio/sms/inbound");
    let number = "+14155550710";
    let media: &[(&str, &[u8])] =
        &[("image/png", &pattern(3000, 4)), ("image/gif", &pattern(900, 5))];
    let (_, sid) = t
        .sandbox()
        .deliver_inbound_mms(&inbound_url, number, FROM, "two", media)
        .await
        .expect("post");
    let mms = t.received(&sid).await;
    let photo = t.meta().keep_media("image/jpeg", &pattern(2000, 6));
    let gone_already = t.meta().keep_media("audio/ogg", &pattern(500, 7));
    for (id, media_id, kind) in
        [("wamid.F1", &photo, "image"), ("wamid.F2", &gone_already, "audio")]
    {
        let message = json!({ "from": &number[1..], "id": id, "timestamp": "1700000000", "type": kind,
                              kind: { "id": media_id, "mime_type": "x/y" } });
        assert_eq!(t.meta().whatsapp_inbound(WA_NUMBER_ID, message).await.expect("post"), 200);
        let on_whatsapp = t.received(id).await;
        assert_eq!(on_whatsapp.contact_id, mms.contact_id, "one person on both channels");
    }
    assert_eq!((t.sandbox().media_kept(), t.meta().media_kept()), (2, 2));
    let deleted = omnigate_adapters::http::client(std::time::Duration::from_secs(5))
        .delete(format!("{}/v23.0/{gone_already}", t.meta().api_base()))
        .bearer_auth("meta-token")
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 200);

    let forget = pb::ForgetContactRequest { contact_id: mms.contact_id.clone() };
    let erased = t.client.forget_contact(forget).await.expect("forgotten").into_inner();
    assert_eq!(erased.messages_erased, 3);
    assert_eq!((t.sandbox().media_kept(), t.meta().media_kept()), (0, 0));
    let refused = fetch(&mut t, &mms.id, 0).await.expect_err("erased");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}
