//! Prints the CRDs as one YAML stream, or with directories as arguments writes one file per CRD
//! into each (`just generate` writes k8s/crds and charts/mcp-operator/crds).
fn main() -> std::io::Result<()> {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    for (file, yaml) in mcp_operator::api::crd_files() {
        if dirs.is_empty() {
            print!("---\n{yaml}");
        }
        for dir in &dirs {
            std::fs::write(std::path::Path::new(dir).join(&file), &yaml)?;
        }
    }
    Ok(())
}
