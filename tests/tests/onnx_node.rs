//! The ONNX backend node tests through each backend.
//!
//! scripts/test.sh generates the cases (the onnx pip package builds them;
//! see tests/onnx_node/generate.py). tests/onnx_node/expected-<backend>.txt
//! is the checked-in verdict for every case in scope: `pass NAME`, or
//! `fail NAME  REASON`. A listed pass that fails is a regression and fails
//! the test; a listed failure that now passes is reported so the list can be
//! updated. `VARC_BLESS=1` rewrites the lists from the current results.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use varc_ir::Tensor;
use varc_tests::{node_cases_dir, root};

/// The ops varc claims to cover (the foundation issue's list).
const CLAIMED_OPS: &[&str] = &[
    "Gather",
    "GatherND",
    "MatMul",
    "Gemm",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Exp",
    "Log",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Cos",
    "Sin",
    "Abs",
    "Clip",
    "Min",
    "Max",
    "Where",
    "Cast",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "ReduceMax",
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "RMSNormalization",
    "Gelu",
    "Attention",
    "Conv",
    "AveragePool",
    "GlobalAveragePool",
    "Resize",
    "Reshape",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Expand",
    "Identity",
    "Shape",
    "ConstantOfShape",
    "Range",
    "Equal",
    "Less",
    "Greater",
    "Not",
    "And",
    "Trilu",
    "Constant",
];

#[derive(Deserialize)]
struct Index {
    onnx_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    ops: Vec<String>,
    rtol: f64,
    atol: f64,
    data_sets: Option<usize>,
    unwritable: Option<String>,
}

fn in_scope(c: &Case) -> bool {
    c.ops.iter().all(|op| CLAIMED_OPS.contains(&op.as_str()))
}

fn read_pb(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    varc_onnx::decode_tensor(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Reference,
    Cpu,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Reference => "reference",
            Backend::Cpu => "cpu",
        }
    }
}

/// Runs one case; Err carries the reason it fails.
///
/// The compiled backend needs static shapes. Where a case passes a
/// shape-determining operand (Reshape's shape, Resize's sizes, Reduce's
/// axes, ...) as a graph input, that input is fixed to the case's value and
/// compiled as a constant — what a static compiler does with such a model
/// (`varc::load_specialized`). Nothing else is folded, so every computed
/// value still comes from the compiled code.
fn run_case(dir: &Path, c: &Case, backend: Backend) -> Result<(), String> {
    if let Some(why) = &c.unwritable {
        return Err(format!("test data is not plain tensors ({why})"));
    }
    let case_dir = dir.join(&c.name);
    let path = case_dir.join("model.onnx");
    let err = |e: anyhow::Error| format!("{e:#}");
    let model = varc::load(&path, &Default::default()).map_err(err)?;
    let input_names: Vec<String> = model.inputs().into_iter().map(|(n, _)| n).collect();
    for k in 0..c.data_sets.unwrap_or(0) {
        let set = case_dir.join(format!("test_data_set_{k}"));
        let inputs = input_names
            .iter()
            .enumerate()
            .map(|(i, n)| Ok((n.clone(), read_pb(&set.join(format!("input_{i}.pb")))?)))
            .collect::<Result<Vec<_>, String>>()?;
        let got = match backend {
            Backend::Reference => model.run_reference(&inputs).map_err(err)?,
            Backend::Cpu => {
                let mut fixed: Vec<String> = Vec::new();
                let mut m =
                    varc::load_for_inputs(&path, &Default::default(), &inputs).map_err(err)?;
                for _ in 0..4 {
                    let more = varc::shape_inputs(&m);
                    if more.is_empty() {
                        break;
                    }
                    fixed.extend(more);
                    m = varc::load_specialized(&path, &Default::default(), &inputs, &fixed)
                        .map_err(err)?;
                }
                let rest: Vec<_> = inputs
                    .iter()
                    .filter(|(n, _)| !fixed.contains(n))
                    .cloned()
                    .collect();
                m.compile_host().map_err(err)?.run(&rest).map_err(err)?
            }
        };
        for (i, (name, g)) in got.iter().enumerate() {
            let want = read_pb(&set.join(format!("output_{i}.pb")))?;
            let a = varc_runtime::compare(g, &want, c.rtol, c.atol)
                .map_err(|e| format!("output '{name}': {e}"))?;
            if !a.passed() {
                return Err(format!(
                    "output '{name}': {} of {} elements outside rtol {} atol {} (max abs {:.3e}, worst {:?})",
                    a.mismatches, a.count, c.rtol, c.atol, a.max_abs, a.worst
                ));
            }
        }
    }
    Ok(())
}

/// Whether a failure reason is a numeric mismatch (rather than a refusal).
fn is_mismatch(reason: &str) -> bool {
    reason.starts_with("output '") && reason.contains("outside rtol")
}

fn one_line(s: &str) -> String {
    let s = s.replace(['\n', '\t'], " ");
    if s.len() > 200 {
        format!("{}…", &s[..s.floor_char_boundary(200)])
    } else {
        s
    }
}

#[test]
fn onnx_node_tests_on_reference_backend() {
    run_suite(Backend::Reference);
}

#[test]
fn onnx_node_tests_on_cpu_backend() {
    run_suite(Backend::Cpu);
}

fn run_suite(backend: Backend) {
    let dir = node_cases_dir();
    let index_path = dir.join("index.json");
    let text = std::fs::read_to_string(&index_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nGenerate the node test cases first: scripts/test.sh does it",
            index_path.display()
        )
    });
    let index: Index = serde_json::from_str(&text).expect("index.json parses");
    let list_path = root().join(format!("tests/onnx_node/expected-{}.txt", backend.name()));
    let expected: BTreeMap<String, (bool, String)> = std::fs::read_to_string(&list_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.splitn(3, char::is_whitespace);
            let verdict = parts.next()?;
            let name = parts.next()?.to_string();
            Some((
                name,
                (
                    verdict == "pass",
                    parts.next().unwrap_or("").trim().to_string(),
                ),
            ))
        })
        .collect();

    let mut results: BTreeMap<String, Result<(), String>> = BTreeMap::new();
    for c in index.cases.iter().filter(|c| in_scope(c)) {
        let r = std::panic::catch_unwind(|| run_case(&dir, c, backend))
            .unwrap_or_else(|_| Err("PANIC (a bug: bad input must give an error)".into()));
        results.insert(c.name.clone(), r);
    }

    let passed = results.values().filter(|r| r.is_ok()).count();
    println!(
        "ONNX node tests (onnx {}) on the {} backend: {passed} of {} in-scope cases pass",
        index.onnx_version,
        backend.name(),
        results.len()
    );
    let mut failing_ops: BTreeMap<&str, usize> = BTreeMap::new();
    for c in index
        .cases
        .iter()
        .filter(|c| results.get(&c.name).is_some_and(|r| r.is_err()))
    {
        for op in &c.ops {
            *failing_ops.entry(op.as_str()).or_default() += 1;
        }
    }
    println!("ops appearing in failing cases: {failing_ops:?}");

    if std::env::var_os("VARC_BLESS").is_some() {
        let mut out = String::from(
            "# ONNX backend node tests through one backend: one line per in-scope case\n\
             # (every op of the case is in the claimed op list). `pass NAME` or `fail NAME  REASON`.\n\
             # Regenerate with VARC_BLESS=1 cargo test -p varc-tests --test onnx_node (then review the diff).\n",
        );
        for (name, r) in &results {
            match r {
                Ok(()) => out.push_str(&format!("pass {name}\n")),
                Err(e) => out.push_str(&format!("fail {name}  {}\n", one_line(e))),
            }
        }
        std::fs::write(&list_path, out).expect("write expected list");
        println!("blessed {}", list_path.display());
        return;
    }

    let mut regressions = Vec::new();
    let mut improvements = Vec::new();
    for (name, r) in &results {
        match (expected.get(name), r) {
            (Some((true, _)), Err(e)) => regressions.push(format!("{name}: {}", one_line(e))),
            // A case that used to be refused with an error must not start
            // computing wrong values: that is silently wrong output.
            (Some((false, why)), Err(e)) if !is_mismatch(why) && is_mismatch(e) => regressions
                .push(format!(
                    "{name}: was refused ({}), now gives wrong values: {}",
                    one_line(why),
                    one_line(e)
                )),
            (None, Err(e)) => {
                regressions.push(format!("{name} (not in the list): {}", one_line(e)))
            }
            (Some((false, _)), Ok(())) | (None, Ok(())) => improvements.push(name.clone()),
            _ => {}
        }
    }
    if !improvements.is_empty() {
        println!("now passing but not listed as pass (run with VARC_BLESS=1): {improvements:?}");
    }
    assert!(
        regressions.is_empty(),
        "{} regressions:\n{}",
        regressions.len(),
        regressions.join("\n")
    );
}
