//! Plugin dependency resolution: the closure a set of plugins needs, in start order.

use crate::api::Plugin;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::fmt;

/// Why a set of plugins cannot be resolved. Every problem names the plugins involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginProblem {
    /// `missing` does not exist; `required_by` names it (None: the MCPServer itself).
    Missing {
        /// The Plugin object that does not exist.
        missing: String,
        /// The plugin whose dependencies name it, or None when the MCPServer does.
        required_by: Option<String>,
    },
    /// Dependencies form a cycle; the path starts and ends with the same plugin.
    Cycle(Vec<String>),
    /// `plugin` exists but this operator cannot read it (`why`); `required_by` as for Missing.
    Unreadable {
        /// The Plugin object.
        plugin: String,
        /// The plugin whose dependencies name it, or None when the MCPServer does.
        required_by: Option<String>,
        /// Why it cannot be read.
        why: String,
    },
}

impl PluginProblem {
    /// The same problem, told better: a plugin "missing" from the readable ones for which
    /// `unreadable` knows why it cannot be read exists after all.
    pub fn explained(self, unreadable: impl Fn(&str) -> Option<String>) -> Self {
        match self {
            Self::Missing { missing, required_by } => match unreadable(&missing) {
                Some(why) => Self::Unreadable { plugin: missing, required_by, why },
                None => Self::Missing { missing, required_by },
            },
            other => other,
        }
    }
}

impl fmt::Display for PluginProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { missing, required_by: Some(by) } => {
                write!(f, "plugin {missing:?} (a dependency of {by:?}) does not exist")
            }
            Self::Missing { missing, required_by: None } => write!(f, "plugin {missing:?} does not exist"),
            Self::Cycle(path) => write!(f, "dependency cycle: {}", path.join(" -> ")),
            Self::Unreadable { plugin, required_by, why } => {
                write!(f, "plugin {plugin:?}")?;
                if let Some(by) = required_by {
                    write!(f, " (a dependency of {by:?})")?;
                }
                write!(f, " cannot be read by this operator: {why}")
            }
        }
    }
}

/// Joins problems into one condition message.
pub fn describe(problems: &[PluginProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The Plugin objects of one namespace by name.
pub type PluginIndex<'a> = BTreeMap<String, &'a Plugin>;

/// Indexes plugins by `metadata.name`.
pub fn index(plugins: &[Plugin]) -> PluginIndex<'_> {
    plugins.iter().map(|p| (p.name_any(), p)).collect()
}

/// Resolves `roots` and everything they depend on, transitively, into start order: each plugin
/// after all of its dependencies, roots in the order given. Collects every problem rather than
/// stopping at the first, so that one status message names them all.
pub fn resolve_plugins(roots: &[String], plugins: &PluginIndex<'_>) -> Result<Vec<String>, Vec<PluginProblem>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    struct Walk<'p, 'a> {
        plugins: &'p PluginIndex<'a>,
        marks: BTreeMap<String, Mark>,
        path: Vec<String>,
        order: Vec<String>,
        problems: Vec<PluginProblem>,
    }
    impl Walk<'_, '_> {
        fn visit(&mut self, name: &str, required_by: Option<&str>) {
            match self.marks.get(name) {
                Some(Mark::Done) => return,
                Some(Mark::Visiting) => {
                    let start = self.path.iter().position(|p| p == name).unwrap_or(0);
                    let mut cycle = self.path[start..].to_vec();
                    cycle.push(name.to_string());
                    if !self.problems.contains(&PluginProblem::Cycle(cycle.clone())) {
                        self.problems.push(PluginProblem::Cycle(cycle));
                    }
                    return;
                }
                None => {}
            }
            let Some(plugin) = self.plugins.get(name) else {
                let problem =
                    PluginProblem::Missing { missing: name.to_string(), required_by: required_by.map(str::to_string) };
                if !self.problems.contains(&problem) {
                    self.problems.push(problem);
                }
                return;
            };
            self.marks.insert(name.to_string(), Mark::Visiting);
            self.path.push(name.to_string());
            for dep in &plugin.spec.dependencies {
                self.visit(dep, Some(name));
            }
            self.path.pop();
            self.marks.insert(name.to_string(), Mark::Done);
            self.order.push(name.to_string());
        }
    }
    let mut walk = Walk { plugins, marks: BTreeMap::new(), path: vec![], order: vec![], problems: vec![] };
    for root in roots {
        walk.visit(root, None);
    }
    if walk.problems.is_empty() {
        Ok(walk.order)
    } else {
        Err(walk.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PluginSpec;
    use rstest::rstest;

    fn plugin(name: &str, deps: &[&str]) -> Plugin {
        let mut p = Plugin::new(
            name,
            PluginSpec {
                name: name.into(),
                image: format!("{name}:1"),
                version: "1".into(),
                port: None,
                isolation: Default::default(),
                resources: None,
                config: None,
                dependencies: deps.iter().map(|d| d.to_string()).collect(),
            },
        );
        p.metadata.namespace = Some("default".into());
        p
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[rstest]
    #[case::single(&["a"], &["a"])]
    #[case::chain(&["wordpress"], &["base", "db", "wordpress"])]
    #[case::shared_dependency_once(&["wordpress", "mysql"], &["base", "db", "wordpress", "mysql"])]
    #[case::roots_keep_order(&["mysql", "a"], &["base", "mysql", "a"])]
    #[case::none(&[], &[])]
    fn resolves_in_start_order(#[case] roots: &[&str], #[case] expected: &[&str]) {
        let all = vec![
            plugin("a", &[]),
            plugin("base", &[]),
            plugin("db", &["base"]),
            plugin("wordpress", &["db", "base"]),
            plugin("mysql", &["base"]),
        ];
        assert_eq!(resolve_plugins(&names(roots), &index(&all)), Ok(names(expected)));
    }

    #[test]
    fn missing_dependency_names_both_plugins() {
        let all = vec![plugin("wordpress", &["base-plugin"])];
        let err = resolve_plugins(&names(&["wordpress"]), &index(&all)).unwrap_err();
        assert_eq!(
            err,
            vec![PluginProblem::Missing { missing: "base-plugin".into(), required_by: Some("wordpress".into()) }]
        );
        assert_eq!(describe(&err), r#"plugin "base-plugin" (a dependency of "wordpress") does not exist"#);
    }

    #[test]
    fn missing_root_and_dependency_are_all_reported() {
        let all = vec![plugin("a", &["x"])];
        let err = resolve_plugins(&names(&["a", "nope"]), &index(&all)).unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(describe(&err[1..]), r#"plugin "nope" does not exist"#);
    }

    #[test]
    fn a_plugin_that_exists_but_cannot_be_read_is_not_called_missing() {
        let all = vec![plugin("wordpress", &["deep", "gone"])];
        let err = resolve_plugins(&names(&["wordpress"]), &index(&all)).unwrap_err();
        let why = |name: &str| (name == "deep").then(|| "spec.config nests more than 127 levels".to_string());
        let told: Vec<_> = err.into_iter().map(|p| p.explained(why)).collect();
        assert_eq!(
            describe(&told),
            r#"plugin "deep" (a dependency of "wordpress") cannot be read by this operator: spec.config nests more than 127 levels; plugin "gone" (a dependency of "wordpress") does not exist"#
        );
    }

    #[test]
    fn cycle_is_named_with_its_path() {
        let all = vec![plugin("a", &["b"]), plugin("b", &["c"]), plugin("c", &["a"])];
        let err = resolve_plugins(&names(&["a"]), &index(&all)).unwrap_err();
        assert_eq!(err, vec![PluginProblem::Cycle(names(&["a", "b", "c", "a"]))]);
        assert_eq!(describe(&err), "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let all = vec![plugin("a", &["a"])];
        let err = resolve_plugins(&names(&["a"]), &index(&all)).unwrap_err();
        assert_eq!(err, vec![PluginProblem::Cycle(names(&["a", "a"]))]);
    }

    #[test]
    fn cycle_below_a_root_is_reported_once() {
        let all = vec![plugin("root", &["x", "y"]), plugin("x", &["y"]), plugin("y", &["x"])];
        let err = resolve_plugins(&names(&["root", "x"]), &index(&all)).unwrap_err();
        assert_eq!(err, vec![PluginProblem::Cycle(names(&["x", "y", "x"]))]);
    }
}

/// Sidecar plugins share the server pod's network: their ports must differ from each other and
/// from the server's. Returns one message per clash.
pub fn check_sidecar_ports(server_port: i32, plugins: &[&Plugin]) -> Vec<String> {
    let gw = crate::build::gateway_ports(server_port);
    let mut taken: BTreeMap<i32, String> = BTreeMap::from([
        (server_port, "the MCP server (spec.port)".to_string()),
        (gw.listen, "the MCP gateway".to_string()),
        (gw.admin, "the MCP gateway's admin port".to_string()),
    ]);
    let mut problems = vec![];
    for p in plugins.iter().filter(|p| p.spec.isolation.level.is_sidecar()) {
        let port = crate::build::plugin_port(p);
        let me = format!("plugin {:?}", p.name_any());
        match taken.get(&port) {
            Some(other) => problems.push(format!("{me} and {other} both use port {port} in the server pod")),
            None => {
                taken.insert(port, me);
            }
        }
    }
    problems
}

/// The MCP server tells plugins apart by `spec.name` (`plugins.json`, `MCP_PLUGIN_NAME`): two
/// plugins of one server must not share it. Returns one message per clash.
pub fn check_plugin_names(plugins: &[&Plugin]) -> Vec<String> {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    let mut problems = vec![];
    for p in plugins {
        let me = p.name_any();
        match seen.get(p.spec.name.as_str()) {
            Some(other) => problems.push(format!(
                "plugins {other:?} and {me:?} both have spec.name {:?} (the server could not tell them apart)",
                p.spec.name
            )),
            None => {
                seen.insert(&p.spec.name, me);
            }
        }
    }
    problems
}

/// Every plugin reachable from `roots` (including them), ignoring missing ones and cycles:
/// the plugins a server uses, for `usedBy`.
pub fn reachable(roots: &[String], plugins: &PluginIndex<'_>) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<String> = roots.to_vec();
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(p) = plugins.get(&name) {
            stack.extend(p.spec.dependencies.iter().cloned());
        }
    }
    seen
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use crate::build::tests::plugin;

    #[test]
    fn sidecar_port_clashes_are_named() {
        let a = plugin("a", "None", "port: 3000");
        let b = plugin("b", "Process", "");
        let c = plugin("c", "Process", "");
        let d = plugin("d", "Container", "");
        let problems = check_sidecar_ports(3000, &[&a, &b, &c, &d]);
        assert_eq!(
            problems,
            vec![
                r#"plugin "a" and the MCP server (spec.port) both use port 3000 in the server pod"#,
                r#"plugin "c" and plugin "b" both use port 8080 in the server pod"#,
            ]
        );
    }

    #[test]
    fn plugins_sharing_a_spec_name_are_named() {
        let mut b = plugin("b", "None", "");
        b.spec.name = "a".into();
        let c = plugin("c", "None", "");
        let a = plugin("a", "None", "");
        assert_eq!(check_plugin_names(&[&a, &c]), Vec::<String>::new());
        assert_eq!(
            check_plugin_names(&[&a, &c, &b]),
            vec![r#"plugins "a" and "b" both have spec.name "a" (the server could not tell them apart)"#]
        );
    }

    #[test]
    fn reachable_follows_dependencies_through_missing_and_cycles() {
        let all = vec![plugin("a", "None", "dependencies: [b, gone]"), plugin("b", "None", "dependencies: [a]")];
        let idx = index(&all);
        let got: Vec<_> = reachable(&["a".into()], &idx).into_iter().collect();
        assert_eq!(got, vec!["a", "b", "gone"]);
    }
}
