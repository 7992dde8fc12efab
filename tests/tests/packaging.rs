//! What an operator installs next to the binaries: the shell completions and
//! man pages `workerctl` generates, and the systemd units in
//! `config/systemd/`, checked by `systemd-analyze verify` against the
//! binaries just built.

use std::path::{Path, PathBuf};
use std::process::Command;

use worker_tests::bins;

/// Runs `workerctl ARGS` (no controller needed) and returns its stdout.
fn workerctl(args: &[&str]) -> String {
    let out = Command::new(&bins().cli).args(args).output().expect("run workerctl");
    assert!(
        out.status.success(),
        "workerctl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn completions_cover_every_command_for_each_shell() {
    let bash = workerctl(&["completions", "bash"]);
    assert!(bash.contains("complete -F"), "a bash completion function:\n{bash:.300}");
    for word in ["jobs", "runs", "dlq", "tokens", "schedules", "--controller", "--limit"] {
        assert!(bash.contains(word), "bash completion knows {word}");
    }
    // The script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("workerctl.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&script).status().expect("bash");
    assert!(check.success(), "bash -n accepts the completion script");
    let zsh = workerctl(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef workerctl"), "{zsh:.200}");
    let fish = workerctl(&["completions", "fish"]);
    assert!(
        fish.contains("complete -c workerctl") && fish.contains("tokens"),
        "{fish:.300}"
    );

    let out = Command::new(&bins().cli)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bash"),
        "the shells are listed"
    );
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let listed = workerctl(&["man", "--dir", man.to_str().unwrap()]);
    for page in [
        "workerctl.1",
        "workerctl-runs-list.1",
        "workerctl-tokens-create.1",
        "workerctl-completions.1",
    ] {
        let path = man.join(page);
        assert!(listed.contains(&path.display().to_string()), "{page} listed:\n{listed}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    let runs_list = std::fs::read_to_string(man.join("workerctl-runs-list.1")).unwrap();
    assert!(runs_list.contains("limit"), "options are documented:\n{runs_list}");

    // An unwritable place is a usage error naming the flag.
    let out = Command::new(&bins().cli)
        .args(["man", "--dir", "/proc/workerctl-man"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));
}

#[test]
fn the_controller_and_the_agent_print_their_man_pages() {
    for (binary, flag) in [(&bins().controller, "--grpc-listen"), (&bins().agent, "--capacity")] {
        let out = Command::new(binary).arg("--print-man").output().expect("run");
        assert!(out.status.success(), "{}: {}", binary.display(), out.status);
        let page = String::from_utf8(out.stdout).unwrap();
        assert!(page.contains(".TH worker-"), "{}: a man page", binary.display());
        // roff writes a flag's dashes as `\-`.
        assert!(
            page.contains(&flag.replace('-', "\\-")),
            "{}: documents {flag}",
            binary.display()
        );
        assert!(!page.contains("print\\-man"), "the flag itself is hidden");
    }
}

/// The unit with `/usr/local/bin/NAME` replaced by the binary just built.
fn unit_for_verify(unit: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit).unwrap();
    let text = text
        .replace("/usr/local/bin/worker-controller", bins().controller.to_str().unwrap())
        .replace("/usr/local/bin/worker-agent", bins().agent.to_str().unwrap());
    let path = dir.join(unit.file_name().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/systemd");
    let controller = units.join("worker-controller.service");
    let agent = units.join("worker-agent.service");
    for unit in [&controller, &agent] {
        let text = std::fs::read_to_string(unit).unwrap();
        for setting in [
            "NoNewPrivileges=yes",
            "Restart=on-failure",
            "ProtectSystem=",
            "PrivateTmp=yes",
        ] {
            assert!(text.contains(setting), "{}: {setting}", unit.display());
        }
        assert!(
            text.lines().any(|l| l.starts_with("User=worker")),
            "{}: a dedicated user",
            unit.display()
        );
    }
    let Ok(status) = Command::new("systemd-analyze").arg("--version").output() else {
        worker_tests::skip::skip_or_fail("systemd-analyze is not installed (Debian: apt-get install systemd)");
        return;
    };
    assert!(status.status.success());
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit_for_verify(&controller, dir.path()))
        .arg(unit_for_verify(&agent, dir.path()))
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {}\n{stderr}", out.status);
    // verify exits 0 on some warnings; none is expected for these units.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("worker-controller.service") || l.contains("worker-agent.service"))
        .collect();
    assert!(
        warnings.is_empty(),
        "systemd-analyze verify warns:\n{}",
        warnings.join("\n")
    );
}
