//! The container files in `config/container/` (docs/container.md), checked without a Docker
//! engine, which this project's CI does not have: each Dockerfile's `ENTRYPOINT` is the exec-form
//! `nbgate run … -- jupyter lab` with options `nbgate run` accepts, the final `USER` is not root,
//! the state directory is a `VOLUME`, the `HEALTHCHECK` command gets a 200 from a real nbgate's
//! health page (and fails without one), and the config file the images ship passes
//! `nbgate check-config` and names the secret file that `docker-compose.yml` mounts.
//!
//! The Dockerfiles are read with a small parser of the instruction grammar (continuation lines,
//! comments, exec-form JSON arrays); what the images do when built is not tested here.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::nbgate::{nbgate_bin, run_to_exit, Finished};
use common::{NbgateBuilder, TestUpstream};

const DOCKERFILES: [&str; 2] = ["Dockerfile.pytorch", "Dockerfile.miniconda"];

/// Where the images install the container config, which `NBGATE_CONFIG` must name.
const CONFIG_IN_IMAGE: &str = "/etc/nbgate/nbgate-container.toml";

fn container_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/container")
}

/// One Dockerfile instruction: its keyword (upper case) and the rest of its logical line.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    rest: String,
}

/// A Dockerfile's instructions, continuation lines joined and comments dropped (Docker also
/// drops comment lines inside a continued instruction).
fn parse_dockerfile(name: &str) -> Vec<Instruction> {
    let path = container_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    common::logical_lines(name, &text, &['#'])
        .into_iter()
        .map(|full| {
            let (keyword, rest) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
            Instruction {
                keyword: keyword.to_ascii_uppercase(),
                rest: rest.trim().to_owned(),
            }
        })
        .collect()
}

fn all<'a>(instructions: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    instructions
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.rest.as_str())
        .collect()
}

fn last<'a>(name: &str, instructions: &'a [Instruction], keyword: &str) -> &'a str {
    all(instructions, keyword)
        .last()
        .copied()
        .unwrap_or_else(|| panic!("{name}: no {keyword}"))
}

/// An exec-form argument list (`["a", "b"]`); `None` for shell form, which would put `/bin/sh`
/// at PID 1 in front of nbgate and swallow the signals nbgate must forward.
fn exec_form(rest: &str) -> Option<Vec<String>> {
    serde_json::from_str(rest).ok()
}

/// `ARG NAME=DEFAULT` values, to resolve `${NAME}` in `USER` and `WORKDIR`.
fn arg_defaults(instructions: &[Instruction]) -> HashMap<String, String> {
    all(instructions, "ARG")
        .into_iter()
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn expand(text: &str, args: &HashMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in args {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    out
}

fn entrypoint(name: &str, instructions: &[Instruction]) -> Vec<String> {
    let rest = last(name, instructions, "ENTRYPOINT");
    exec_form(rest).unwrap_or_else(|| panic!("{name}: ENTRYPOINT is not exec form: {rest}"))
}

/// The `nbgate run` options of the entrypoint (before `--`) and the command after it.
fn split_entrypoint(name: &str, argv: &[String]) -> (Vec<String>, Vec<String>) {
    assert_eq!(
        argv.get(..2),
        Some(&["nbgate".to_owned(), "run".to_owned()][..]),
        "{name}: ENTRYPOINT must start with nbgate run: {argv:?}"
    );
    let sep = argv
        .iter()
        .position(|a| a == "--")
        .unwrap_or_else(|| panic!("{name}: ENTRYPOINT has no `--`: {argv:?}"));
    (argv[2..sep].to_vec(), argv[sep + 1..].to_vec())
}

fn option_value(options: &[String], flag: &str) -> Option<String> {
    let at = options.iter().position(|o| o == flag)?;
    options.get(at + 1).cloned()
}

fn healthcheck_argv(name: &str, instructions: &[Instruction]) -> Vec<String> {
    let rest = last(name, instructions, "HEALTHCHECK");
    let at = rest
        .find("CMD ")
        .unwrap_or_else(|| panic!("{name}: HEALTHCHECK has no CMD: {rest}"));
    exec_form(rest[at + 4..].trim())
        .unwrap_or_else(|| panic!("{name}: HEALTHCHECK CMD is not exec form: {rest}"))
}

async fn run(cmd: Command) -> Finished {
    run_to_exit(cmd, Duration::from_secs(30)).await
}

#[test]
fn dockerfiles_start_nbgate_run_as_an_exec_form_entrypoint_for_jupyter_lab() {
    for name in DOCKERFILES {
        let instructions = parse_dockerfile(name);
        let argv = entrypoint(name, &instructions);
        let (options, command) = split_entrypoint(name, &argv);
        assert_eq!(
            command.get(..2),
            Some(&["jupyter".to_owned(), "lab".to_owned()][..]),
            "{name}: the child must be `jupyter lab`: {argv:?}"
        );
        assert!(
            !options.iter().any(|o| o == "--allow-root" || o == "--user"),
            "{name}: everything runs as the image's non-root USER: {argv:?}"
        );
        // `docker run IMAGE ARGS` appends ARGS to `jupyter lab`, never to nbgate's options.
        let cmd = last(name, &instructions, "CMD");
        assert_eq!(exec_form(cmd), Some(vec![]), "{name}: CMD must be []");
    }
}

#[tokio::test]
async fn entrypoint_options_are_options_of_nbgate_run() {
    let mut cmd = Command::new(nbgate_bin());
    cmd.args(["run", "--help"]);
    let help = run(cmd).await;
    assert!(help.status.success(), "{help:?}");
    for name in DOCKERFILES {
        let argv = entrypoint(name, &parse_dockerfile(name));
        let (options, _) = split_entrypoint(name, &argv);
        for flag in options.iter().filter(|o| o.starts_with("--")) {
            assert!(
                help.stdout.contains(flag.as_str()),
                "{name}: `nbgate run --help` does not list {flag}:\n{}",
                help.stdout
            );
        }
    }
}

#[test]
fn dockerfiles_run_as_a_non_root_user() {
    for name in DOCKERFILES {
        let instructions = parse_dockerfile(name);
        let args = arg_defaults(&instructions);
        let user = expand(last(name, &instructions, "USER"), &args);
        let uid = user.split(':').next().unwrap_or_default();
        let numeric: u32 = uid.parse().unwrap_or_else(|_| {
            panic!("{name}: USER must be a numeric uid (runAsNonRoot): {user}")
        });
        assert_ne!(numeric, 0, "{name}: USER is root");
    }
}

#[test]
fn dockerfiles_keep_the_state_dir_on_a_volume_and_expose_8443() {
    for name in DOCKERFILES {
        let instructions = parse_dockerfile(name);
        let argv = entrypoint(name, &instructions);
        let (options, _) = split_entrypoint(name, &argv);
        let state_dir = option_value(&options, "--state-dir")
            .unwrap_or_else(|| panic!("{name}: no --state-dir in {argv:?}"));
        let volumes: Vec<String> = all(&instructions, "VOLUME")
            .into_iter()
            .flat_map(|v| exec_form(v).unwrap_or_else(|| vec![v.to_owned()]))
            .collect();
        assert!(
            volumes.contains(&state_dir),
            "{name}: state dir {state_dir} is not a VOLUME: {volumes:?}"
        );
        assert!(
            all(&instructions, "EXPOSE").contains(&"8443"),
            "{name}: EXPOSE 8443 missing"
        );
        let copies = all(&instructions, "COPY");
        assert!(
            copies.iter().any(|c| c.ends_with(CONFIG_IN_IMAGE)),
            "{name}: the container config is not copied to {CONFIG_IN_IMAGE}"
        );
    }
}

/// Runs a Dockerfile's HEALTHCHECK command against `addr` (instead of 127.0.0.1:8443), with the
/// host's `python3` for the image's `python`.
async fn run_healthcheck(argv: &[String], addr: &str) -> Finished {
    let mut args: Vec<String> = argv
        .iter()
        .map(|a| a.replace("127.0.0.1:8443", addr))
        .collect();
    assert_eq!(args[0], "python", "HEALTHCHECK must need no curl: {argv:?}");
    args[0] = "python3".into();
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    run(cmd).await
}

#[tokio::test]
async fn healthcheck_gets_200_from_nbgate_and_fails_without_it() {
    let upstream = TestUpstream::start().await;
    let gate = NbgateBuilder::new().upstream(&upstream.url()).start().await;
    let up = gate.https_addr().to_string();
    // nbgate runs but nothing answers behind it (the builder's default upstream).
    let orphan = NbgateBuilder::new().start().await;
    let sick = orphan.https_addr().to_string();
    // A port nobody listens on: bound, then released.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .to_string();
    for name in DOCKERFILES {
        let argv = healthcheck_argv(name, &parse_dockerfile(name));
        assert!(
            argv.iter()
                .any(|a| a.contains("https://127.0.0.1:8443/_nbgate/health")),
            "{name}: HEALTHCHECK must ask nbgate's health page on 8443: {argv:?}"
        );
        let ok = run_healthcheck(&argv, &up).await;
        assert!(ok.status.success(), "{name}: healthy nbgate: {ok:?}");
        let failed = run_healthcheck(&argv, &down).await;
        assert!(!failed.status.success(), "{name}: no nbgate: {failed:?}");
        let failed = run_healthcheck(&argv, &sick).await;
        assert!(
            !failed.status.success(),
            "{name}: nbgate without Jupyter: {failed:?}"
        );
    }
}

#[tokio::test]
async fn container_config_passes_check_config_and_names_the_compose_secret() {
    let path = container_dir().join("nbgate-container.toml");
    let mut cmd = Command::new(nbgate_bin());
    cmd.env_remove("NBGATE_CONFIG")
        .arg("check-config")
        .arg("--config")
        .arg(&path);
    let out = run(cmd).await;
    assert!(out.status.success(), "{out:?}");

    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(&path).expect("read the container config"))
            .expect("container config is TOML");
    let secret_path = config["auth"]["password_file"]
        .as_str()
        .expect("auth.password_file is set");
    let secret = secret_path
        .strip_prefix("/run/secrets/")
        .expect("password_file is a Docker/Kubernetes secret under /run/secrets/");

    let compose = std::fs::read_to_string(container_dir().join("docker-compose.yml"))
        .expect("read docker-compose.yml");
    for needle in [
        format!("NBGATE_CONFIG: {CONFIG_IN_IMAGE}"),
        format!("- {secret}\n"),
        format!("  {secret}:\n"),
        ":/var/lib/nbgate\n".to_owned(),
    ] {
        assert!(
            compose.contains(&needle),
            "docker-compose.yml lacks {needle:?}"
        );
    }
}
