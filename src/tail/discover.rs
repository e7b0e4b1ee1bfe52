//! File discovery: walks the literal directory prefix of each `paths` glob and keeps the
//! regular files that match an include glob and no exclude glob.

use std::path::{Component, Path, PathBuf};

use super::InputSettings;

/// Where to walk for one glob: the directory before the first glob character, and how deep.
#[derive(Debug, PartialEq, Eq)]
struct WalkRoot {
    dir: PathBuf,
    /// `None`: unlimited (the glob has `**`).
    max_depth: Option<usize>,
}

fn walk_root(pattern: &str) -> WalkRoot {
    let path = Path::new(pattern);
    let mut dir = PathBuf::new();
    let mut rest = Vec::new();
    for component in path.components() {
        let text = component.as_os_str().to_string_lossy();
        let is_glob = text.contains(['*', '?', '[', '{']);
        if rest.is_empty() && !is_glob {
            dir.push(component);
        } else {
            rest.push(text.into_owned());
        }
    }
    if rest.is_empty() {
        // A literal file path: walk its directory, one level.
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        return WalkRoot { dir: non_empty(parent), max_depth: Some(1) };
    }
    let unlimited = rest.iter().any(|part| part.contains("**"));
    let max_depth = (!unlimited).then_some(rest.len());
    WalkRoot { dir: non_empty(dir), max_depth }
}

fn non_empty(dir: PathBuf) -> PathBuf {
    if dir.as_os_str().is_empty() || dir.components().all(|c| c == Component::CurDir) {
        PathBuf::from(".")
    } else {
        dir
    }
}

/// The directories discovery walks, and whether below them too (for file-system events).
pub fn roots(input: &InputSettings) -> Vec<(PathBuf, bool)> {
    input
        .paths
        .iter()
        .map(|pattern| walk_root(pattern))
        .map(|root| (root.dir, root.max_depth.is_none_or(|d| d > 1)))
        .collect()
}

/// The files that `input` selects right now, sorted, without duplicates.
pub fn discover(input: &InputSettings) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for pattern in &input.paths {
        let root = walk_root(pattern);
        let mut walker = walkdir::WalkDir::new(&root.dir).follow_links(true);
        if let Some(depth) = root.max_depth {
            walker = walker.max_depth(depth);
        }
        for entry in walker.into_iter().filter_map(Result::ok) {
            if !entry.file_type().is_file() {
                continue;
            }
            let path = clean(entry.path(), &root.dir, pattern);
            if selected(input, &path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// walkdir yields `./x.log` for a root of `.`; globs written as `x/*.log` expect `x/...`.
fn clean(path: &Path, root: &Path, pattern: &str) -> PathBuf {
    if root == Path::new(".") && !pattern.starts_with("./") {
        if let Ok(stripped) = path.strip_prefix(".") {
            return stripped.to_path_buf();
        }
    }
    path.to_path_buf()
}

fn selected(input: &InputSettings, path: &Path) -> bool {
    if !input.include.is_match(path) || input.exclude_paths.is_match(path) {
        return false;
    }
    path.file_name().is_none_or(|name| !input.exclude_names.is_match(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_stop_at_the_first_glob_component() {
        assert_eq!(walk_root("/var/log/app/*.log"), WalkRoot { dir: "/var/log/app".into(), max_depth: Some(1) });
        assert_eq!(walk_root("/var/log/**/*.json"), WalkRoot { dir: "/var/log".into(), max_depth: None });
        assert_eq!(walk_root("fixtures/*.log"), WalkRoot { dir: "fixtures".into(), max_depth: Some(1) });
        assert_eq!(walk_root("*.log"), WalkRoot { dir: ".".into(), max_depth: Some(1) });
        assert_eq!(walk_root("/var/log/app.log"), WalkRoot { dir: "/var/log".into(), max_depth: Some(1) });
    }
}
