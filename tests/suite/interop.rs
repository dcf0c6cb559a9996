//! Real producers and consumers: archives imgsync writes are loaded by
//! `docker load` with the same image IDs and tags, read by `skopeo`, and
//! validated by `umoci` and `oci-image-tool`; archives written by real
//! `docker save` and `skopeo copy` are read.

use serde_json::Value;

use super::harness::*;

/// Builds a small image with the legacy builder (COPY runs no container)
/// and returns its image ID.
fn docker_build(
    dir: &std::path::Path,
    tag: Option<&str>,
    from: &str,
    file: &str,
    text: &str,
) -> String {
    let ctx = dir.join(format!("ctx-{file}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join(file), text).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {from}\nCOPY {file} /{file}\n"),
    )
    .unwrap();
    let mut args = vec!["build", "-q"];
    if let Some(t) = tag {
        args.extend(["-t", t]);
    }
    let ctx_s = ctx.display().to_string();
    args.push(&ctx_s);
    let out = std::process::Command::new("docker")
        .args(&args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn image_id(reference: &str) -> String {
    tool(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", reference],
    )
    .trim()
    .to_string()
}

fn rmi(refs: &[&str]) {
    let mut args = vec!["rmi", "-f"];
    args.extend(refs);
    let _ = tool_status("docker", &args);
}

#[test]
fn docker_loads_what_imgsync_writes_with_same_ids_and_tags() {
    require_docker();
    let t = TestDir::new();
    let base = unique("load-base");
    let top = unique("load-top");
    let (base_tag, top_tag) = (format!("{base}:1"), format!("{top}:2"));
    let base_id = docker_build(
        t.dir.path(),
        Some(&base_tag),
        "scratch",
        "a.txt",
        "base layer\n",
    );
    let top_id = docker_build(
        t.dir.path(),
        Some(&top_tag),
        &base_tag,
        "b.txt",
        "top layer\n",
    );
    tool(
        "docker",
        &["save", "-o", &t.p("saved.tar"), &base_tag, &top_tag],
    );
    rmi(&[&base_tag, &top_tag]);

    // docker save → OCI layout (gzip) → docker archive → docker load.
    t.imgsync(&[
        "copy",
        "--dest-compress",
        "gzip",
        "docker-archive:saved.tar",
        "oci:l",
    ])
    .ok();
    t.imgsync(&["copy", "oci:l", "docker-archive:out.tar"]).ok();
    let loaded = tool("docker", &["load", "-i", &t.p("out.tar")]);
    assert!(
        loaded.contains(&base_tag) && loaded.contains(&top_tag),
        "{loaded}"
    );
    assert_eq!(image_id(&base_tag), base_id);
    assert_eq!(image_id(&top_tag), top_id);
    rmi(&[&base_tag, &top_tag]);

    // The legacy shape too, streamed into `docker load` on stdin.
    let run = t
        .imgsync(&[
            "copy",
            "-q",
            "--docker-format",
            "legacy",
            "oci:l",
            "docker-archive:-",
        ])
        .ok();
    std::fs::write(t.path("legacy.tar"), &run.stdout).unwrap();
    let loaded = tool(
        "sh",
        &["-c", &format!("docker load < {}", t.p("legacy.tar"))],
    );
    assert!(loaded.contains(&top_tag), "{loaded}");
    assert_eq!(image_id(&top_tag), top_id);
    rmi(&[&base_tag, &top_tag]);
}

#[test]
fn reads_real_docker_save_with_untagged_image_and_shared_layers() {
    require_docker();
    let t = TestDir::new();
    let a = format!("{}:1", unique("save-a"));
    let b = format!("{}:1", unique("save-b"));
    docker_build(t.dir.path(), Some(&a), "scratch", "one.txt", "one\n");
    docker_build(t.dir.path(), Some(&b), &a, "two.txt", "two\n");
    let untagged = docker_build(t.dir.path(), None, &a, "three.txt", "three\n");
    // docker save straight into imgsync on standard input.
    let saved = std::process::Command::new("docker")
        .args(["save", &a, &b, &untagged])
        .output()
        .unwrap();
    assert!(saved.status.success());
    let info = t
        .imgsync_stdin(&["inspect", "--json", "docker-archive:-"], &saved.stdout)
        .ok()
        .json();
    let images = info.as_array().unwrap();
    assert_eq!(images.len(), 3, "{info}");
    let configs: Vec<&str> = images
        .iter()
        .map(|i| i["config"].as_str().unwrap())
        .collect();
    assert!(
        configs.contains(&untagged.as_str()),
        "{configs:?} lacks {untagged}"
    );
    assert!(
        images
            .iter()
            .any(|i| i["names"].as_array().unwrap().is_empty()),
        "one image is untagged"
    );
    t.imgsync_stdin(
        &["copy", "docker-archive:-", "oci-archive:all.tar"],
        &saved.stdout,
    )
    .ok();
    t.imgsync(&["verify", "oci-archive:all.tar"]).ok();
    // The untagged image is selectable by index and loads back.
    let untagged_index = images
        .iter()
        .position(|i| i["config"] == untagged.as_str())
        .unwrap();
    std::fs::write(t.path("saved.tar"), &saved.stdout).unwrap();
    t.imgsync(&[
        "copy",
        &format!("docker-archive:saved.tar:@{untagged_index}"),
        "docker-archive:u.tar",
    ])
    .ok();
    rmi(&[&untagged]);
    let loaded = tool("docker", &["load", "-i", &t.p("u.tar")]);
    assert!(loaded.contains(&untagged), "{loaded}");
    rmi(&[&a, &b, &untagged]);
}

#[test]
fn skopeo_reads_every_store_imgsync_writes_with_same_digests() {
    let t = TestDir::new();
    let hello = fixture("hello.tar").display().to_string();
    t.imgsync(&["copy", &format!("docker-archive:{hello}"), "oci:l"])
        .ok();
    t.imgsync(&["copy", "oci:l", "oci-archive:l.tar"]).ok();
    t.imgsync(&["copy", "oci:l", "docker-archive:d.tar"]).ok();
    let ours = layout_refs(&t.path("l"));
    let digest_1 = &ours.iter().find(|(r, _)| r == "1.0").unwrap().1;
    for loc in [
        format!("oci:{}:1.0", t.p("l")),
        format!("oci-archive:{}:1.0", t.p("l.tar")),
    ] {
        let raw = tool("skopeo", &["inspect", "--raw", &loc]);
        assert_eq!(
            &format!("sha256:{}", sha256_hex(raw.as_bytes())),
            digest_1,
            "{loc}"
        );
    }
    // skopeo reads our docker archive by name; its synthesised manifest
    // lists the same config (image ID).
    let ours_info = t.imgsync(&["inspect", "--json", "oci:l:1.0"]).ok().json();
    let sk: Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("docker-archive:{}:imgsync-fixture/hello:1.0", t.p("d.tar")),
        ],
    ))
    .unwrap();
    assert_eq!(sk["config"]["digest"], ours_info[0]["config"]);
    // skopeo copies out of each.
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}:1.0", t.p("l.tar")),
            &format!("oci:{}:x", t.p("sk")),
        ],
    );
    tool(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}:imgsync-fixture/hello:2.0", t.p("d.tar")),
            &format!("oci:{}:y", t.p("sk")),
        ],
    );
}

#[test]
fn reads_archives_written_by_skopeo() {
    let t = TestDir::new();
    let hello = fixture("hello.tar").display().to_string();
    tool(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{hello}:imgsync-fixture/hello:2.0"),
            &format!("oci-archive:{}:v2", t.p("s.tar")),
        ],
    );
    tool(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{hello}:imgsync-fixture/hello:2.0"),
            &format!("oci:{}:v2", t.p("s-layout")),
        ],
    );
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:v2", t.p("s-layout")),
            &format!(
                "docker-archive:{}:imgsync-fixture/hello:2.0",
                t.p("s-docker.tar")
            ),
        ],
    );
    let expected = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}:v2", t.p("s.tar")),
        ],
    );
    let expected = format!("sha256:{}", sha256_hex(expected.as_bytes()));
    let info = t
        .imgsync(&["inspect", "--json", "oci-archive:s.tar:v2"])
        .ok()
        .json();
    assert_eq!(info[0]["digest"], expected.as_str());
    t.imgsync(&["copy", "oci-archive:s.tar:v2", "oci:mine:v2"])
        .ok();
    assert_eq!(layout_refs(&t.path("mine"))[0].1, expected);
    t.imgsync(&["verify", "oci:s-layout"]).ok();
    // skopeo's docker archive (uncompressed layers at the root, full names).
    let d = t
        .imgsync(&[
            "inspect",
            "--json",
            "docker-archive:s-docker.tar:imgsync-fixture/hello:2.0",
        ])
        .ok()
        .json();
    assert_eq!(d[0]["names"][0], "docker.io/imgsync-fixture/hello:2.0");
    t.imgsync(&["verify", "docker-archive:s-docker.tar"]).ok();
}

#[test]
fn layouts_pass_umoci_and_oci_image_tool() {
    let t = TestDir::new();
    let hello = fixture("hello.tar").display().to_string();
    t.imgsync(&["copy", &format!("docker-archive:{hello}"), "oci:plain"])
        .ok();
    t.imgsync(&[
        "copy",
        "--dest-compress",
        "gzip",
        &format!("docker-archive:{hello}"),
        "oci:gz",
    ])
    .ok();
    for layout in ["plain", "gz"] {
        for tag in ["1.0", "2.0"] {
            let (ok, out) = tool_status(
                "oci-image-tool",
                &[
                    "validate",
                    "--type",
                    "image",
                    "--ref",
                    &format!("name={tag}"),
                    &t.p(layout),
                ],
            );
            assert!(
                ok && out.contains("Validation succeeded"),
                "oci-image-tool on {layout}:{tag}: {out}"
            );
            let stat = tool(
                "umoci",
                &["stat", "--image", &format!("{}:{tag}", t.p(layout))],
            );
            assert!(stat.contains("LAYER"), "{stat}");
        }
    }
}
