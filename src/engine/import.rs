//! Guards around the ONNX importers scoria does not own (tract's protobuf-to-graph import):
//! checks that turn a malformed model into a precise load error before it reaches code that
//! would panic on it, and a last line that turns any panic left in that code into a one-line
//! load error, so that a bad model is refused and the server keeps serving.

use super::EngineError;
use std::cell::Cell;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use tract_onnx::pb::{GraphProto, ModelProto};

/// Checks what tract's import assumes of a graph and panics on otherwise: every graph output
/// (of the model's graph and of each subgraph) names a value that the graph defines (an
/// input, an initializer, a node's output) or reads (a node's input).
pub fn check_graph(proto: &ModelProto) -> Result<(), String> {
    match &proto.graph {
        Some(g) => check_outputs(g, "the graph", 0),
        None => Ok(()),
    }
}

/// Subgraphs nested deeper than this are refused (protobuf decoding already bounds it).
const MAX_DEPTH: usize = 64;

fn check_outputs(g: &GraphProto, which: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("subgraphs nested deeper than {MAX_DEPTH} levels"));
    }
    let mut known: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    known.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for n in &g.node {
        known.extend(n.output.iter().chain(&n.input).map(String::as_str));
    }
    if let Some(o) = g.output.iter().find(|o| !known.contains(o.name.as_str())) {
        return Err(format!(
            "{which} has output '{}', which no node produces and which is not an input or initializer",
            o.name
        ));
    }
    for n in &g.node {
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                let which = format!(
                    "the subgraph '{}' of node '{}' ({})",
                    a.name, n.name, n.op_type
                );
                check_outputs(sub, &which, depth + 1)?;
            }
        }
    }
    Ok(())
}

thread_local! {
    /// How many [`contain`] calls this thread is inside.
    static CONTAINED: Cell<usize> = const { Cell::new(0) };
}

/// True while this thread runs code under [`contain`]: a panic now becomes a load error. A
/// panic hook uses it to stay quiet (the error says what happened).
pub fn panic_is_contained() -> bool {
    CONTAINED.with(Cell::get) > 0
}

/// Runs `f`, a step of `importer` (third-party code) on a model; a panic in it becomes a load
/// error naming the importer and its message.
pub fn contain<T>(
    importer: &str,
    f: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    CONTAINED.with(|c| c.set(c.get() + 1));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(c.get() - 1));
    outcome.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(EngineError::Load(format!(
            "{importer} failed on this model ({}): the model is refused",
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{NodeProto, ValueInfoProto};

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn outputs_must_be_defined() {
        let node = NodeProto {
            input: vec!["x".into()],
            output: vec!["y".into()],
            op_type: "Relu".into(),
            ..Default::default()
        };
        let mut g = GraphProto {
            input: vec![value("x")],
            output: vec![value("y")],
            node: vec![node],
            ..Default::default()
        };
        let model = |g: &GraphProto| ModelProto {
            graph: Some(g.clone()),
            ..Default::default()
        };
        assert_eq!(check_graph(&model(&g)), Ok(()));
        g.output.push(value("nowhere"));
        let e = check_graph(&model(&g)).unwrap_err();
        assert!(e.contains("output 'nowhere'"), "{e}");
    }

    #[test]
    fn contained_panics_are_load_errors() {
        let r: Result<(), EngineError> = contain("tract", || panic!("no entry\nfound"));
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("tract failed on this model (no entry found)"),
            "{e}"
        );
        assert!(!panic_is_contained());
    }
}
