//! `eval_node`: one node on its operand values, dispatched by op.

use crate::attention::attention;
use crate::common::{R, arg, ints, opt};
use crate::conv::conv;
use crate::elementwise::{
    binary, cast, clip, gelu, hard_sigmoid, leaky_relu, unary, variadic, where_,
};
use crate::index::{
    constant_of_shape, gather, gather_elements, gather_nd, range, shape, size, trilu,
};
use crate::matmul::{gemm, matmul};
use crate::movement::{
    concat, expand, flatten, identity, pad, reshape, slice, split, squeeze, tile, transpose,
    unsqueeze,
};
use crate::norm::{group_norm, instance_norm, layer_norm, rms_norm};
use crate::pool::{average_pool, global_pool, max_pool};
use crate::reduce::{arg_reduce, cumsum, reduce, softmax};
use crate::resample_op::resample;
use crate::resize::resize;
use varc_ir::{IrError, Node, Op, Tensor};

/// Evaluates `node` on `inputs` (`inputs[i]` is `None` for an omitted
/// optional operand; a shorter slice means the rest are omitted). Returns
/// exactly `node.outputs.len()` tensors. Errors name the node and its op.
pub fn eval_node(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, IrError> {
    let outs = dispatch(node, inputs).map_err(|reason| node.error(reason))?;
    if outs.len() != node.outputs.len() {
        return Err(node.error(format!(
            "produced {} output(s) but the node declares {}",
            outs.len(),
            node.outputs.len()
        )));
    }
    Ok(outs)
}

/// All operands, none of them omitted (variadic ops).
fn all_inputs<'a>(inputs: &[Option<&'a Tensor>]) -> R<Vec<&'a Tensor>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| format!("input {i} is missing")))
        .collect()
}

/// Axes from the attribute (older opsets) or from optional input `slot`.
fn axes_from(
    attr: &Option<Vec<i64>>,
    inputs: &[Option<&Tensor>],
    slot: usize,
) -> R<Option<Vec<i64>>> {
    match (attr, opt(inputs, slot)) {
        (Some(a), _) => Ok(Some(a.clone())),
        (None, Some(t)) => Ok(Some(ints(t, "axes")?)),
        (None, None) => Ok(None),
    }
}

fn dispatch(node: &Node, inputs: &[Option<&Tensor>]) -> R<Vec<Tensor>> {
    let n_out = node.outputs.len();
    let x = |i: usize, what: &str| arg(inputs, i, what);
    let one = |t: R<Tensor>| t.map(|t| vec![t]);
    match &node.op {
        Op::Input => {
            Err("a graph input has no operands to evaluate; its value is fed by the caller".into())
        }
        Op::Const(t) => Ok(vec![t.clone()]),
        Op::Identity => Ok(vec![identity(x(0, "input")?)]),
        Op::Unary(u) => one(unary(*u, x(0, "X")?)),
        Op::Binary(b) => one(binary(*b, x(0, "A")?, x(1, "B")?)),
        Op::Variadic(v) => one(variadic(*v, &all_inputs(inputs)?)),
        Op::Clip => one(clip(x(0, "input")?, opt(inputs, 1), opt(inputs, 2))),
        Op::Where => one(where_(x(0, "condition")?, x(1, "X")?, x(2, "Y")?)),
        Op::Cast { to } => Ok(vec![cast(x(0, "input")?, *to)]),
        Op::CastLike => Ok(vec![cast(x(0, "input")?, x(1, "target_type")?.dtype())]),
        Op::Softmax {
            axis,
            log,
            coerce_2d,
        } => one(softmax(x(0, "input")?, *axis, *log, *coerce_2d)),
        Op::Reduce {
            kind,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let axes = axes_from(axes, inputs, 1)?.unwrap_or_default();
            one(reduce(
                x(0, "data")?,
                *kind,
                &axes,
                *keepdims,
                *noop_with_empty_axes,
            ))
        }
        Op::ArgReduce {
            max,
            axis,
            keepdims,
            select_last_index,
        } => one(arg_reduce(
            x(0, "data")?,
            *max,
            *axis,
            *keepdims,
            *select_last_index,
        )),
        Op::LayerNorm {
            axis,
            epsilon,
            stash_type,
        } => layer_norm(
            x(0, "X")?,
            x(1, "Scale")?,
            opt(inputs, 2),
            *axis,
            *epsilon,
            *stash_type,
            n_out,
        ),
        Op::RmsNorm {
            axis,
            epsilon,
            stash_type,
        } => one(rms_norm(
            x(0, "X")?,
            x(1, "scale")?,
            opt(inputs, 2),
            *axis,
            *epsilon,
            *stash_type,
        )),
        Op::InstanceNorm { epsilon } => one(instance_norm(
            x(0, "input")?,
            x(1, "scale")?,
            x(2, "B")?,
            *epsilon,
        )),
        Op::GroupNorm {
            num_groups,
            epsilon,
            stash_type: _,
            per_group_affine,
        } => one(group_norm(
            x(0, "X")?,
            x(1, "scale")?,
            x(2, "bias")?,
            *num_groups,
            *epsilon,
            *per_group_affine,
        )),
        Op::Gelu { approximate } => one(gelu(x(0, "X")?, *approximate)),
        Op::LeakyRelu { alpha } => one(leaky_relu(x(0, "X")?, *alpha)),
        Op::HardSigmoid { alpha, beta } => one(hard_sigmoid(x(0, "X")?, *alpha, *beta)),
        Op::MatMul => one(matmul(x(0, "A")?, x(1, "B")?)),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => one(gemm(
            x(0, "A")?,
            x(1, "B")?,
            opt(inputs, 2),
            *alpha,
            *beta,
            *trans_a,
            *trans_b,
        )),
        Op::Attention(attrs) => attention(inputs, attrs, n_out),
        Op::Conv { window, group } => {
            one(conv(x(0, "X")?, x(1, "W")?, opt(inputs, 2), window, *group))
        }
        Op::AveragePool {
            window,
            ceil_mode,
            count_include_pad,
        } => one(average_pool(
            x(0, "X")?,
            window,
            *ceil_mode,
            *count_include_pad,
        )),
        Op::MaxPool { window, ceil_mode } => {
            if n_out > 1 {
                return Err("MaxPool's optional Indices output is not supported".into());
            }
            one(max_pool(x(0, "X")?, window, *ceil_mode))
        }
        Op::GlobalAveragePool => one(global_pool(x(0, "X")?, false)),
        Op::GlobalMaxPool => one(global_pool(x(0, "X")?, true)),
        // Inputs pass by position; with `scales_input_only` (opset 10) the
        // scales sit in slot 1, which `resize` accepts.
        Op::Resize(attrs) => one(resize(
            x(0, "X")?,
            opt(inputs, 1),
            opt(inputs, 2),
            opt(inputs, 3),
            attrs,
        )),
        Op::Resample { maps } => one(resample(x(0, "X")?, maps)),
        Op::Reshape { allowzero } => one(reshape(x(0, "data")?, x(1, "shape")?, *allowzero)),
        Op::Transpose { perm } => one(transpose(x(0, "data")?, perm.as_deref())),
        Op::Concat { axis } => one(concat(&all_inputs(inputs)?, *axis)),
        Op::Split {
            axis,
            split: sizes,
            num_outputs,
        } => {
            if *num_outputs != 0 && *num_outputs != n_out {
                return Err(format!(
                    "num_outputs is {num_outputs} but the node has {n_out} outputs"
                ));
            }
            let sizes = match (sizes, opt(inputs, 1)) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(t)) if t.numel() > 0 => Some(ints(t, "split")?),
                _ => None,
            };
            split(x(0, "input")?, *axis, sizes.as_deref(), n_out)
        }
        Op::Slice => one(slice(
            x(0, "data")?,
            x(1, "starts")?,
            x(2, "ends")?,
            opt(inputs, 3),
            opt(inputs, 4),
        )),
        Op::Squeeze { axes } => one(squeeze(
            x(0, "data")?,
            axes_from(axes, inputs, 1)?.as_deref(),
        )),
        Op::Unsqueeze { axes } => {
            let axes =
                axes_from(axes, inputs, 1)?.ok_or("axes are required (attribute or input 1)")?;
            one(unsqueeze(x(0, "data")?, &axes))
        }
        Op::Flatten { axis } => one(flatten(x(0, "input")?, *axis)),
        Op::Expand => one(expand(x(0, "input")?, x(1, "shape")?)),
        Op::Tile => one(tile(x(0, "input")?, x(1, "repeats")?)),
        Op::Pad { mode } => one(pad(
            x(0, "data")?,
            x(1, "pads")?,
            opt(inputs, 2),
            opt(inputs, 3),
            *mode,
        )),
        Op::Shape { start, end } => one(shape(x(0, "data")?, *start, *end)),
        Op::Size => one(size(x(0, "data")?)),
        Op::ConstantOfShape { value } => one(constant_of_shape(x(0, "input")?, value)),
        Op::Range => one(range(x(0, "start")?, x(1, "limit")?, x(2, "delta")?)),
        Op::Gather { axis } => one(gather(x(0, "data")?, x(1, "indices")?, *axis)),
        Op::GatherElements { axis } => one(gather_elements(x(0, "data")?, x(1, "indices")?, *axis)),
        Op::GatherND { batch_dims } => one(gather_nd(x(0, "data")?, x(1, "indices")?, *batch_dims)),
        Op::Trilu { upper } => one(trilu(x(0, "input")?, opt(inputs, 1), *upper)),
        Op::CumSum { exclusive, reverse } => {
            one(cumsum(x(0, "x")?, x(1, "axis")?, *exclusive, *reverse))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::Value;
    use varc_ir::op::BinaryOp;

    fn node(op: Op, n_in: usize, n_out: usize) -> Node {
        Node {
            name: "n1".into(),
            op,
            inputs: vec![None; n_in],
            outputs: (0..n_out).map(|i| Value::named(format!("y{i}"))).collect(),
        }
    }

    #[test]
    fn errors_name_node_and_op() {
        let a = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let b = Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let n = node(Op::Binary(BinaryOp::Add), 2, 1);
        let e = eval_node(&n, &[Some(&a), Some(&b)])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("node 'n1' (Add): "), "{e}");
        let e = eval_node(&n, &[Some(&a)]).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        let e = eval_node(&node(Op::Input, 0, 1), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("(Input)"), "{e}");
        // output count is checked
        let e = eval_node(
            &node(Op::Binary(BinaryOp::Add), 2, 2),
            &[Some(&a), Some(&a)],
        )
        .unwrap_err();
        assert!(e.to_string().contains("declares 2"), "{e}");
        let c = eval_node(&node(Op::Const(a.clone()), 0, 1), &[]).unwrap();
        assert_eq!(c, vec![a]);
    }

    #[test]
    fn folder_passes_the_bare_reason() {
        use varc_ir::infer::ConstFold;
        let a = Tensor::from_i64(vec![1], vec![2]).unwrap();
        let n = node(Op::Binary(BinaryOp::Mul), 2, 1);
        let out = crate::RefFolder.fold(&n, &[Some(&a), Some(&a)]).unwrap();
        assert_eq!(out[0].to_i64_vec(), vec![4]);
        let e = crate::RefFolder.fold(&n, &[Some(&a)]).unwrap_err();
        assert!(e.starts_with("required input 1"), "{e}");
    }

    #[test]
    fn split_and_layer_norm_outputs() {
        let x = Tensor::from_i64(vec![4], vec![1, 2, 3, 4]).unwrap();
        let n = node(
            Op::Split {
                axis: 0,
                split: None,
                num_outputs: 0,
            },
            1,
            2,
        );
        let outs = eval_node(&n, &[Some(&x)]).unwrap();
        assert_eq!(outs[1].to_i64_vec(), vec![3, 4]);
        let sizes = Tensor::from_i64(vec![2], vec![1, 3]).unwrap();
        let outs = eval_node(&n, &[Some(&x), Some(&sizes)]).unwrap();
        assert_eq!(outs[1].to_i64_vec(), vec![2, 3, 4]);
        let f = Tensor::from_f32(vec![1, 2], vec![1.0, 3.0]).unwrap();
        let s = Tensor::from_f32(vec![2], vec![1.0, 1.0]).unwrap();
        let ln = node(
            Op::LayerNorm {
                axis: -1,
                epsilon: 0.0,
                stash_type: 1,
            },
            3,
            2,
        );
        let outs = eval_node(&ln, &[Some(&f), Some(&s), None]).unwrap();
        assert_eq!(outs.len(), 2);
        assert_eq!(outs[1].to_f64_vec(), vec![2.0]);
    }
}
