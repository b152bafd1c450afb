//! Smoke tests of the storage test servers (support/servers.rs): each one starts, gets a bucket
//! or container, round-trips objects through OpenDAL, dies on `kill` and comes back empty on
//! `restart`.

use opendal::{ErrorKind, Operator, services};
use reqwest::StatusCode;

use crate::support::servers::{Azurite, GcsEmulator, Moto};

const MIB: usize = 1024 * 1024;

fn s3(moto: &Moto, bucket: &str) -> Operator {
    opendal::install_default();
    let builder = services::S3::default()
        .endpoint(&moto.endpoint())
        .bucket(bucket)
        .region("us-east-1")
        .access_key_id("x")
        .secret_access_key("x")
        .disable_config_load()
        .disable_ec2_metadata();
    Operator::new(builder).expect("S3 operator")
}

fn azblob(azurite: &Azurite, container: &str, key: &str) -> Operator {
    opendal::install_default();
    let builder = services::Azblob::default()
        .endpoint(&azurite.endpoint())
        .account_name(Azurite::ACCOUNT)
        .account_key(key)
        .container(container);
    Operator::new(builder).expect("Azblob operator")
}

/// `skip_signature` (formerly `allow_anonymous`): no credentials and no signing, for the emulator.
fn gcs(emulator: &GcsEmulator, bucket: &str) -> Operator {
    opendal::install_default();
    let builder = services::Gcs::default()
        .endpoint(&emulator.endpoint())
        .bucket(bucket)
        .skip_signature()
        .disable_vm_metadata()
        .disable_config_load();
    Operator::new(builder).expect("GCS operator")
}

/// Bytes that differ per call, so a read can only match the write that made them.
fn payload(len: usize) -> Vec<u8> {
    let seed = fastrand::u64(..);
    (0..len)
        .map(|i| {
            (seed
                .wrapping_add(i as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                >> 56) as u8
        })
        .collect()
}

/// One-shot write, stat, read, list, delete.
async fn round_trip(op: &Operator) {
    let body = payload(1000);
    op.write_with("smoke/hello.txt", body.clone())
        .content_type("text/plain")
        .await
        .expect("write");
    let meta = op.stat("smoke/hello.txt").await.expect("stat");
    assert_eq!(meta.content_length(), body.len() as u64);
    assert_eq!(meta.content_type(), Some("text/plain"));
    let read = op.read("smoke/hello.txt").await.expect("read").to_vec();
    assert_eq!(read, body, "the bytes read back are the bytes written");
    let listed: Vec<String> = op
        .list("smoke/")
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.path().to_string())
        .collect();
    assert!(
        listed.contains(&"smoke/hello.txt".to_string()),
        "listed {listed:?}"
    );
    op.delete("smoke/hello.txt").await.expect("delete");
    let gone = op.stat("smoke/hello.txt").await.expect_err("deleted");
    assert_eq!(gone.kind(), ErrorKind::NotFound);
}

/// A streaming write in several parts (multipart upload on S3, staged blocks on Azure).
async fn multipart_round_trip(op: &Operator, chunk: usize, parts: usize) {
    let body = payload(chunk * parts + 12345);
    let mut w = op
        .writer_with("smoke/big.bin")
        .chunk(chunk)
        .concurrent(2)
        .content_type("application/octet-stream")
        .await
        .expect("writer");
    for piece in body.chunks(MIB) {
        w.write(piece.to_vec()).await.expect("write part");
    }
    w.close().await.expect("complete the upload");
    let read = op.read("smoke/big.bin").await.expect("read").to_vec();
    assert_eq!(read.len(), body.len());
    assert!(read == body, "the bytes read back are the bytes written");
}

#[tokio::test]
async fn moto_serves_s3_through_opendal() {
    let mut moto = Moto::start().await;
    moto.create_bucket("upkeep-smoke").await;
    let op = s3(&moto, "upkeep-smoke");
    round_trip(&op).await;
    // S3's smallest part is 5 MiB.
    multipart_round_trip(&op, 5 * MIB, 2).await;

    moto.reset().await;
    let err = op
        .stat("smoke/big.bin")
        .await
        .expect_err("reset forgets all");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    moto.create_bucket("upkeep-smoke").await;

    moto.kill().await;
    op.stat("smoke/big.bin")
        .await
        .expect_err("a killed server does not answer");

    moto.restart().await;
    let err = op
        .stat("smoke/big.bin")
        .await
        .expect_err("moto restarts empty");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    moto.create_bucket("upkeep-smoke").await;
    round_trip(&op).await;
}

#[tokio::test]
async fn azurite_serves_azure_blob_through_opendal() {
    let mut azurite = Azurite::start().await;
    azurite.create_container("upkeep-smoke").await;
    let op = azblob(&azurite, "upkeep-smoke", Azurite::KEY);
    round_trip(&op).await;
    multipart_round_trip(&op, 4 * MIB, 2).await;

    azurite.kill().await;
    op.stat("smoke/big.bin")
        .await
        .expect_err("a killed server does not answer");

    azurite.restart().await;
    let err = op
        .stat("smoke/big.bin")
        .await
        .expect_err("azurite restarts empty");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    azurite.create_container("upkeep-smoke").await;
    round_trip(&op).await;
}

#[tokio::test]
async fn azurite_rejects_a_wrong_shared_key() {
    let azurite = Azurite::start().await;
    let wrong_key = base64_of(&[7u8; 64]);

    let status = azurite
        .create_container_with_key("upkeep-signed", &wrong_key)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a wrong key is refused");
    // OpenDAL signing with the wrong key is refused as well.
    let err = azblob(&azurite, "upkeep-signed", &wrong_key)
        .write_with("x", b"x".to_vec())
        .content_type("text/plain")
        .await
        .expect_err("a wrong key is refused");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");

    // The right key creates it (so the refusal created nothing), then it exists.
    azurite.create_container("upkeep-signed").await;
    let again = azurite
        .create_container_with_key("upkeep-signed", Azurite::KEY)
        .await;
    assert_eq!(again, StatusCode::CONFLICT, "the container exists now");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn gcs_emulator_serves_gcs_through_opendal() {
    let mut emulator = GcsEmulator::start("upkeep-smoke").await;
    let op = gcs(&emulator, emulator.bucket());
    round_trip(&op).await;

    emulator.create_bucket("upkeep-other").await;
    let other = gcs(&emulator, "upkeep-other");
    round_trip(&other).await;

    emulator.kill().await;
    op.stat("smoke/hello.txt")
        .await
        .expect_err("a killed server does not answer");

    emulator.restart().await;
    let err = other
        .stat("smoke/hello.txt")
        .await
        .expect_err("restarts without the other bucket");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    round_trip(&op).await;
}
