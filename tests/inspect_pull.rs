//! `layerfs diff` with an image reference naming a registry that the store lacks: it is pulled
//! first (from a real registry started on 127.0.0.1), then compared.
mod inspect_common;
mod registry_common;
mod store_common;

use inspect_common::{Env, base_layer, v2_layer};
use store_common::{TestImage, oci_files, write_dir};

#[test]
fn pulls_what_is_missing() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    env.load_image(&[base_layer()], "test/v1:latest", None);
    let reg = registry_common::Registry::start();
    let img = TestImage::new(
        [base_layer(), v2_layer()]
            .iter()
            .map(|t| (store_common::gzip(t), t.clone()))
            .collect(),
    );
    let layout = env.tmp.path().join("v2-layout");
    let ann = serde_json::json!({"org.opencontainers.image.ref.name": "v2"});
    write_dir(&layout, &oci_files(&[(&img, ann)]));
    let r = format!("{}/test/v2:latest", reg.addr());
    registry_common::skopeo_copy(
        &format!("oci:{}:v2", layout.display()),
        &format!("docker://{r}"),
        &[],
    );
    let o = env.cmd(&["diff", "test/v1", &r]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), inspect_common::V1_V2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not in the store: pulling it"), "{err}");
    // Now it is in the store: no second pull.
    let o = env.cmd(&["diff", "test/v1", &r]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("pulling"));
    assert!(env.ok(&["images"]).contains("test/v2"));
    // A missing image in the registry is an error naming it; a bare name is never pulled.
    let e = env.fails(&["diff", &format!("{}/nope:1", reg.addr())]);
    assert!(e.contains("nope"), "{e}");
    let e = env.fails(&["diff", "nope"]);
    assert!(e.contains("no such container, image or layer"), "{e}");
}
