//! A docker `config.json` that is JSON but not a config: `login` and
//! `logout` fail with one line naming the file, and leave it as it was.

use super::harness::*;
use super::registry_harness::{Kind, PASSWORD, Registry, USER};

#[test]
fn config_json_that_is_not_an_object_is_an_error_naming_the_file() {
    let reg = Registry::start(Kind::Basic);
    let t = TestDir::new();
    let certs = reg.cert_dir();
    for (doc, verb) in [("[]", "login"), ("\"x\"", "logout"), ("[]", "logout")] {
        let dir = t.path(&format!("docker-{verb}-{}", doc.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        std::fs::write(&file, doc).unwrap();
        let env = [("DOCKER_CONFIG", dir.to_str().unwrap())];
        let args: Vec<&str> = match verb {
            "login" => vec![
                "login",
                &reg.host,
                "-u",
                USER,
                "-p",
                PASSWORD,
                "--cert-dir",
                &certs,
            ],
            _ => vec!["logout", &reg.host],
        };
        let run = t.imgsync_env(&args, &env);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        run.fails(1, &[file.to_str().unwrap(), "not an object"]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), doc, "{verb}");
    }
}
