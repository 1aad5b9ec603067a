//! The deploy files cannot be run here (no container engine), so they are kept correct by
//! reading: every YAML file parses, and every `lsq-webhooks` command they run is accepted by
//! the real command-line parser (a renamed flag breaks this test, not a deployment).

use std::path::{Path, PathBuf};

use clap::Parser;
use lsq_webhooks::cli::Cli;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("deploy/ is readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every `command:`/`args:` list in a YAML document, with the key it was found under.
fn command_lists(doc: &Yaml, out: &mut Vec<Vec<String>>) {
    match doc {
        Yaml::Hash(map) => {
            for (k, v) in map {
                if let (Some("command" | "args"), Yaml::Array(items)) = (k.as_str(), v) {
                    let words: Vec<String> = items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect();
                    out.push(words);
                }
                command_lists(v, out);
            }
        }
        Yaml::Array(items) => items.iter().for_each(|i| command_lists(i, out)),
        _ => {}
    }
}

#[test]
fn deploy_yaml_parses_and_runs_only_commands_that_exist() {
    let files = deploy_files();
    assert!(
        files.len() >= 4,
        "expected compose, prometheus and k8s files, found {files:?}"
    );
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", file.display()));
        let mut lists = Vec::new();
        docs.iter().for_each(|d| command_lists(d, &mut lists));
        for words in lists {
            // Redis's own command lines and health checks are not ours.
            let first = words.first().map(String::as_str).unwrap_or_default();
            if first.starts_with("redis") || first == "CMD" || first.starts_with("--") {
                continue;
            }
            let argv = std::iter::once("lsq-webhooks".to_string()).chain(words.iter().cloned());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!(
                    "{}: `lsq-webhooks {}` is refused:\n{e}",
                    file.display(),
                    words.join(" ")
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} commands found in deploy/");
}

#[test]
fn dockerfile_runs_the_binary_as_a_non_root_user() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
        .expect("Dockerfile");
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage build expected");
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as {user}"
    );
    assert!(text.contains("--bin lsq-webhooks"));
    assert!(text.contains("/usr/local/bin/lsq-webhooks"));
}
