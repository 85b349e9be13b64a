//! Resource quantities (`resource.Quantity`) compared as the API server compares them, and the
//! resource names a container may ask for, so that what the API server would refuse a pod for (a
//! request above its limit, `CPU` for `cpu`, a GPU request without an equal limit) is reported
//! naming the MCPServer's or Plugin's own field before any child is written (the API server would
//! refuse the Deployment, naming only its pod template).

use k8s_openapi::api::core::v1::ResourceRequirements;

/// The largest quantity: 2⁶³−1 units, in nanos (the API server caps larger ones to it).
pub const MAX_NANOS: i128 = i64::MAX as i128 * 1_000_000_000;

/// `q` in units of 10⁻⁹, rounded up (the API server keeps no finer precision) and capped at
/// 2⁶³−1 units as the API server caps it; `None` when it is not a quantity or too large to compare
/// here (the API server then decides).
pub fn nanos(q: &str) -> Option<i128> {
    exact_nanos(q).map(|n| n.min(MAX_NANOS))
}

/// `q` in units of 10⁻⁹ as written (rounded up, not capped); `None` when it is not a quantity or
/// too large for an i128.
pub fn exact_nanos(q: &str) -> Option<i128> {
    let q = q.strip_prefix('+').unwrap_or(q);
    let end = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(end);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let digits = format!("{whole}{frac}");
    let significand: i128 = digits.parse().ok()?;
    let (mut exponent, binary): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        s if s.starts_with(['e', 'E']) => (s[1..].parse().ok()?, 0),
        _ => return None,
    };
    exponent = exponent.checked_add(9)?.checked_sub(i64::try_from(frac.len()).ok()?)?;
    let value = significand.checked_mul(1024i128.checked_pow(binary)?)?;
    if exponent >= 0 {
        value.checked_mul(10i128.checked_pow(u32::try_from(exponent).ok()?)?)
    } else {
        // Rounded up: a positive amount below one unit is one unit.
        match 10i128.checked_pow(u32::try_from(-exponent).ok()?) {
            Some(divisor) => Some(value / divisor + i128::from(value % divisor != 0)),
            None => Some(i128::from(value > 0)),
        }
    }
}

/// The resources of a container without a domain in their names (besides `hugepages-<size>`).
const STANDARD: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// A resource of Kubernetes' own: no domain, or a `kubernetes.io` one (`kubernetes.io/batch-cpu`).
fn native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// A DNS subdomain (a resource name's domain, an object's name).
pub(crate) fn subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            // No limit per label: the API server checks a resource name's domain that way.
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The name part of a qualified name.
fn name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A qualified name (a label's key): a name, optionally after a DNS subdomain and `/`.
pub(crate) fn qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        None => name_part(s),
        Some((prefix, name)) => subdomain(prefix) && name_part(name),
    }
}

/// Whether a container may ask for the resource `name`, as the API server checks a pod's
/// containers: without a domain, a standard one or huge pages (`hugepages-2Mi`); with one, a
/// qualified name (`nvidia.com/gpu`, `kubernetes.io/batch-cpu`).
fn container_resource(name: &str) -> bool {
    match name.split_once('/') {
        None => STANDARD.contains(&name) || name.starts_with("hugepages-"),
        Some((domain, rest)) => subdomain(domain) && name_part(rest),
    }
}

/// Whether a request of `name` may be below its limit: not for huge pages and extended resources.
fn overcommittable(name: &str) -> bool {
    native(name) && !name.starts_with("hugepages-")
}

/// What is wrong with `amount` of the resource `name` (a message to follow the field), as the
/// API server checks it: huge pages come in whole pages of the size the name gives, an extended
/// resource in whole units.
fn amount_problem(name: &str, amount: &str) -> Option<String> {
    const UNIT: i128 = 1_000_000_000;
    // Units, rounded up as the API server rounds a quantity's value; None when not comparable here.
    let units = |q: &str| exact_nanos(q).filter(|n| *n <= MAX_NANOS).map(|n| (n + UNIT - 1) / UNIT);
    if let Some(size) = name.strip_prefix("hugepages-") {
        let Some(page) = units(size).filter(|p| *p > 0) else {
            return Some(format!(": {size:?} is not a page size"));
        };
        return units(amount)
            .is_some_and(|bytes| bytes % page != 0)
            .then(|| format!(" ({amount}) is not a whole number of {size} pages"));
    }
    (!native(name) && exact_nanos(amount).is_some_and(|n| n <= MAX_NANOS && n % UNIT != 0))
        .then(|| format!(" ({amount}) is not a whole number"))
}

/// One message per problem of `resources` that the API server would refuse the pod for, naming
/// the fields under `field` (e.g. `spec.resources`): a resource a container cannot ask for, a
/// negative amount, a request above its limit, for huge pages and extended resources a request
/// without an equal limit, huge pages in other than whole pages or without cpu or memory beside
/// them, an extended resource in other than whole units, and a resource claim (the pod declares
/// none to claim from).
pub fn resource_problems(field: &str, resources: Option<&ResourceRequirements>) -> Vec<String> {
    let Some(r) = resources else { return vec![] };
    let empty = Default::default();
    let (requests, limits) = (r.requests.as_ref().unwrap_or(&empty), r.limits.as_ref().unwrap_or(&empty));
    let mut problems = vec![];
    for (i, claim) in r.claims.iter().flatten().enumerate() {
        problems
            .push(format!("{field}.claims[{i}] ({}): not supported: the pod declares no resource claims", claim.name));
    }
    for (side, map) in [("limits", limits), ("requests", requests)] {
        for (name, q) in map {
            if !container_resource(name) {
                problems.push(format!(
                    "{field}.{side}.{name}: not a resource a container can ask for (cpu, memory, ephemeral-storage, \
                     hugepages-<size>, or an extended resource named with its domain, such as nvidia.com/gpu)"
                ));
            } else if q.0.trim_start().starts_with('-') {
                problems.push(format!("{field}.{side}.{name} ({}) is negative", q.0));
            } else if let Some(problem) = amount_problem(name, &q.0) {
                problems.push(format!("{field}.{side}.{name}{problem}"));
            }
        }
    }
    for (name, request) in requests.iter().filter(|(name, _)| container_resource(name)) {
        let limit = limits.get(name);
        if !overcommittable(name) {
            match limit {
                None => problems.push(format!(
                    "{field}.requests.{name} needs {field}.limits.{name} of the same amount: {name} cannot be \
                     overcommitted"
                )),
                Some(limit) if nanos(&request.0).zip(nanos(&limit.0)).is_some_and(|(r, l)| r != l) => {
                    problems.push(format!(
                        "{field}.requests.{name} ({}) differs from {field}.limits.{name} ({}): {name} cannot be \
                         overcommitted, so they must be equal",
                        request.0, limit.0
                    ))
                }
                Some(_) => {}
            }
            continue;
        }
        let Some(limit) = limit else { continue };
        if nanos(&request.0).zip(nanos(&limit.0)).is_some_and(|(r, l)| r > l) {
            problems.push(format!(
                "{field}.requests.{name} ({}) is more than {field}.limits.{name} ({}): a container may not request \
                 more than its limit",
                request.0, limit.0
            ));
        }
    }
    let named = |n: &str| requests.contains_key(n) || limits.contains_key(n);
    if requests.keys().chain(limits.keys()).any(|n| n.starts_with("hugepages-")) && !named("cpu") && !named("memory") {
        problems.push(format!("{field}: huge pages need a cpu or memory request or limit beside them"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    #[test]
    fn every_form_the_api_server_accepts() {
        let n = |q| nanos(q).unwrap_or_else(|| panic!("{q} parses"));
        assert_eq!(n("1"), 1_000_000_000);
        assert_eq!(n("+1"), n("1"));
        assert_eq!(n("1.5"), n("1500m"));
        assert_eq!(n("0.1"), n("100m"));
        assert_eq!(n(".5"), n("500m"));
        assert_eq!(n("5."), n("5"));
        assert_eq!(n("1k"), n("1000"));
        assert_eq!(n("1e3"), n("1k"));
        assert_eq!(n("1E3"), n("1k"));
        assert_eq!(n("1e+3"), n("1k"));
        assert_eq!(n("1e-3"), n("1m"));
        assert_eq!(n("1E"), n("1e18"));
        assert_eq!(n("1Ki"), n("1024"));
        assert_eq!(n("1.5Gi"), n("1536Mi"));
        assert_eq!(n("1u"), n("1000n"));
        assert_eq!(n("0.1n"), 1, "rounded up to a nano");
        assert_eq!(n("0"), 0);
        assert_eq!(n("1e-40"), 1);
        assert_eq!(n("0e-40"), 0);
        assert!(n("2") > n("1999m"));
        assert!(n("1G") < n("1Gi"));
        // Rounding up near the top of the range does not overflow.
        assert_eq!(n("99999999999999999999999999999999999999e-47"), 1);
        // Capped at 2^63-1 units, as the API server caps them: equal, so never a refusal.
        assert_eq!(n("16Ei"), n("8Ei"));
        assert_eq!(n("20000000000000000000"), n("1e19"));
        assert!(n("1Ei") < n("8Ei"));
    }

    #[test]
    fn not_a_quantity_or_too_large_is_none() {
        for q in [
            "",
            ".",
            "1.5.5",
            "lots",
            "1GB",
            "1e1.5",
            "-1",
            "1ki",
            "1e",
            "1e99",
            "99999999999999999999999999999999E",
            "1e9223372036854775807",
        ] {
            assert_eq!(nanos(q), None, "{q}");
        }
    }

    fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
        let map = |kv: &[(&str, &str)]| {
            Some(kv.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect::<BTreeMap<_, _>>())
        };
        ResourceRequirements { requests: map(requests), limits: map(limits), ..Default::default() }
    }

    #[test]
    fn a_resource_a_container_cannot_ask_for_names_its_field() {
        let r = resources(
            &[("memroy", "1Gi"), ("cpu", "100m"), ("example.com/foo", "1")],
            &[("CPU", "1"), ("gpu", "1"), ("Example.com/x", "1"), ("example.com/-x", "1"), ("example.com/foo", "1")],
        );
        let problems = resource_problems("spec.resources", Some(&r));
        let named: Vec<_> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            named,
            [
                "spec.resources.limits.CPU",
                "spec.resources.limits.Example.com/x",
                "spec.resources.limits.example.com/-x",
                "spec.resources.limits.gpu",
                "spec.resources.requests.memroy",
            ]
        );
        assert!(problems[0].contains("not a resource a container can ask for (cpu, memory"), "{}", problems[0]);
        let fine = resources(
            &[
                ("cpu", "1"),
                ("memory", "1Gi"),
                ("ephemeral-storage", "1Gi"),
                ("nvidia.com/gpu", "1"),
                ("hugepages-2Mi", "2Mi"),
                ("kubernetes.io/batch-cpu", "500"),
            ],
            &[
                ("cpu", "2"),
                ("nvidia.com/gpu", "1"),
                ("hugepages-2Mi", "2Mi"),
                ("example.com/foo", "3"),
                // Kubernetes' own domain (Koordinator's batch resources): native, overcommitted like cpu.
                ("kubernetes.io/batch-cpu", "1000"),
            ],
        );
        assert_eq!(resource_problems("spec.resources", Some(&fine)), Vec::<String>::new());
    }

    #[test]
    fn huge_pages_and_extended_resources_need_a_limit_equal_to_the_request() {
        let r = resources(
            &[("nvidia.com/gpu", "1"), ("hugepages-2Mi", "2Mi"), ("memory", "1Gi")],
            &[("hugepages-2Mi", "4Mi")],
        );
        assert_eq!(
            resource_problems("spec.resources", Some(&r)),
            vec![
                "spec.resources.requests.hugepages-2Mi (2Mi) differs from spec.resources.limits.hugepages-2Mi (4Mi): \
                 hugepages-2Mi cannot be overcommitted, so they must be equal",
                "spec.resources.requests.nvidia.com/gpu needs spec.resources.limits.nvidia.com/gpu of the same amount: \
                 nvidia.com/gpu cannot be overcommitted",
            ]
        );
    }

    #[test]
    fn a_negative_amount_names_its_field() {
        let r = resources(&[("memory", "-1")], &[("cpu", " -2")]);
        assert_eq!(
            resource_problems("spec.resources", Some(&r)),
            vec!["spec.resources.limits.cpu ( -2) is negative", "spec.resources.requests.memory (-1) is negative"]
        );
    }

    #[test]
    fn a_request_above_its_limit_names_both_fields() {
        let r = resources(&[("cpu", "2"), ("memory", "256Mi")], &[("cpu", "1500m"), ("memory", "1Gi")]);
        assert_eq!(
            resource_problems("spec.resources", Some(&r)),
            vec![
                "spec.resources.requests.cpu (2) is more than spec.resources.limits.cpu (1500m): a container may not \
                 request more than its limit"
            ]
        );
        // Equal, below, only one side, or not comparable here: nothing to say.
        let fine = [
            resources(&[("cpu", "1")], &[("cpu", "1000m")]),
            resources(&[("cpu", "100m")], &[("memory", "1Gi")]),
            resources(&[("memory", "1e99")], &[("memory", "1Gi")]),
            resources(&[], &[("cpu", "1")]),
        ];
        for r in &fine {
            assert!(resource_problems("spec.resources", Some(r)).is_empty(), "{r:?}");
        }
        assert!(resource_problems("spec.resources", None).is_empty());
        let two = resources(&[("cpu", "2"), ("memory", "2Gi")], &[("cpu", "1"), ("memory", "1Gi")]);
        assert_eq!(resource_problems("spec.resources", Some(&two)).len(), 2);
    }

    #[test]
    fn a_resource_claim_is_refused_the_pod_declares_none() {
        let mut r = resources(&[("cpu", "1")], &[]);
        r.claims = Some(vec![k8s_openapi::api::core::v1::ResourceClaim { name: "gpu".into(), ..Default::default() }]);
        assert_eq!(
            resource_problems("spec.resources", Some(&r)),
            vec!["spec.resources.claims[0] (gpu): not supported: the pod declares no resource claims"]
        );
    }

    #[test]
    fn huge_pages_and_extended_resources_in_the_amounts_a_pod_takes() {
        let problems = |requests: &[(&str, &str)], limits: &[(&str, &str)]| {
            resource_problems("spec.resources", Some(&resources(requests, limits)))
        };
        assert_eq!(
            problems(&[("hugepages-2Mi", "4Mi")], &[("hugepages-2Mi", "4Mi")]),
            vec!["spec.resources: huge pages need a cpu or memory request or limit beside them"]
        );
        assert_eq!(
            problems(&[], &[("hugepages-2Mi", "3Mi"), ("memory", "1Gi")]),
            vec!["spec.resources.limits.hugepages-2Mi (3Mi) is not a whole number of 2Mi pages"]
        );
        assert_eq!(
            problems(&[], &[("hugepages-abc", "2Mi"), ("memory", "1Gi")]),
            vec!["spec.resources.limits.hugepages-abc: \"abc\" is not a page size"]
        );
        assert_eq!(
            problems(&[("example.com/gpu", "500m")], &[("example.com/gpu", "500m")]),
            vec![
                "spec.resources.limits.example.com/gpu (500m) is not a whole number",
                "spec.resources.requests.example.com/gpu (500m) is not a whole number",
            ]
        );
        // What the API server takes.
        for (requests, limits) in [
            (vec![], vec![("hugepages-1Gi", "2Gi"), ("cpu", "1")]),
            (vec![("memory", "1Gi")], vec![("hugepages-2Mi", "2048Ki")]),
            (vec![("example.com/gpu", "2")], vec![("example.com/gpu", "2")]),
            (vec![], vec![("example.com/gpu", "1e3")]),
        ] {
            assert_eq!(problems(&requests, &limits), Vec::<String>::new(), "{requests:?} {limits:?}");
        }
    }
}
