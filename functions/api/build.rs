//! Builds the web dashboard (`dashboard/`, TypeScript and Apache ECharts from the npm registry)
//! into `$OUT_DIR/dashboard`, where `src/dashboard.rs` embeds it: every binary serving the API carries
//! its pages and needs nothing at run time.
//!
//! `npm ci` runs when `dashboard/node_modules` is missing or older than the lock file; then
//! `node build.mjs --outdir …` bundles. `REMARKETABLE_DASHBOARD_DIST=<dir>` embeds a bundle
//! built beforehand instead (index.html, app.js, app.css), for builds without Node.js.

use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: [&str; 3] = ["index.html", "app.js", "app.css"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let web = manifest.join("dashboard");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("dashboard");
    println!("cargo:rerun-if-env-changed=REMARKETABLE_DASHBOARD_DIST");
    for input in [
        "src",
        "package.json",
        "package-lock.json",
        "build.mjs",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed=dashboard/{input}");
    }
    std::fs::create_dir_all(&out).expect("create $OUT_DIR/dashboard");

    if let Some(dist) = std::env::var_os("REMARKETABLE_DASHBOARD_DIST") {
        let dist = PathBuf::from(dist);
        println!("cargo:rerun-if-changed={}", dist.display());
        for file in FILES {
            std::fs::copy(dist.join(file), out.join(file)).unwrap_or_else(|e| {
                fail(&format!(
                    "REMARKETABLE_DASHBOARD_DIST: cannot copy {}: {e}",
                    dist.join(file).display()
                ))
            });
        }
    } else {
        if needs_install(&web) {
            run(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&web),
                "npm ci (installs the dashboard's packages from the npm registry)",
            );
        }
        run(
            Command::new("node")
                .arg("build.mjs")
                .arg("--outdir")
                .arg(&out)
                .current_dir(&web),
            "node build.mjs (bundles the dashboard)",
        );
    }
    for file in FILES {
        if !out.join(file).is_file() {
            fail(&format!("the dashboard build made no {file}"));
        }
    }
}

/// True when the installed packages are missing or older than the lock file.
fn needs_install(web: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(&web.join("node_modules/.package-lock.json")),
        modified(&web.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    }
}

fn run(command: &mut Command, what: &str) {
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("{what} failed ({status})")),
        Err(e) => fail(&format!(
            "{what} could not start: {e}. The dashboard needs Node.js and npm \
             (scripts/test installs them with apt-get), or REMARKETABLE_DASHBOARD_DIST"
        )),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
