//! What the sandbox tests share.

/// A host folder outside /tmp (which the sandbox replaces with a private one; CI's clone may
/// itself live under /tmp): /var/tmp, else the build's own temporary folder.
pub fn outside_tmp() -> std::path::PathBuf {
    let var_tmp = std::path::Path::new("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp.to_path_buf()
    } else {
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    }
}
