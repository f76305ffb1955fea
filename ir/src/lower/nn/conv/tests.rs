//! The library-tagged convolution lowering: which convolutions take it,
//! the tag (accepted by `kernel::library::check`, refused when altered),
//! and its loop nest evaluated by `kernel::eval` against the im2col form.

use crate::graph::{Graph, TypeInfo, Value, ValueRef};
use crate::infer::{NoFold, infer_types};
use crate::kernel::{ConvCall, Library, Program, eval, library};
use crate::lower::{LowerOptions, lower_with};
use crate::op::{Op, Window};
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::testing::values;

struct Case {
    x: Vec<usize>,
    w: Vec<usize>,
    bias: bool,
    window: Window,
    group: usize,
}

fn window(pads: &[usize], strides: &[usize], dilations: &[usize]) -> Window {
    Window {
        kernel_shape: None,
        pads: pads.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        auto_pad: None,
    }
}

impl Case {
    fn lower(&self, conv_library: bool) -> (Program, Vec<Tensor>) {
        let mut g = Graph::new("t");
        let mut feeds = vec![];
        let mut input = |g: &mut Graph, shape: &[usize]| {
            let n = shape.iter().product();
            let t = Tensor::from_f32(shape.to_vec(), values(feeds.len() as u64 + 1, n)).unwrap();
            let ty = TypeInfo {
                dtype: t.dtype(),
                shape: Shape::known(t.shape()),
            };
            let id = g.add_input(format!("in{}", feeds.len()), ty);
            feeds.push(t);
            Some(ValueRef { node: id, slot: 0 })
        };
        let x = input(&mut g, &self.x);
        let w = input(&mut g, &self.w);
        let b = self.bias.then(|| input(&mut g, &[self.w[0]])).flatten();
        let id = g
            .add_node(
                "conv",
                Op::Conv {
                    window: self.window.clone(),
                    group: self.group,
                },
                vec![x, w, b],
                vec![Value::named("y")],
            )
            .unwrap();
        g.outputs = vec![ValueRef { node: id, slot: 0 }];
        let inferred = infer_types(&mut g, &Default::default(), &NoFold).unwrap();
        let opts = LowerOptions {
            conv_library,
            ..Default::default()
        };
        (lower_with(&g, &inferred.consts, &opts).unwrap(), feeds)
    }
}

fn tags(p: &Program) -> Vec<&ConvCall> {
    p.kernels
        .iter()
        .filter_map(|k| match &k.library {
            Some(Library::Conv(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// Every 2-D f32 convolution of one group (not tiny) becomes one tagged
/// kernel whose tag checks; the program computes what the im2col form
/// does (f32 sums in another order: relative 1e-5 of the magnitude).
#[test]
fn tagged_convolutions_match_the_im2col_form() {
    let cases = [
        // 3×3, pad 1 (the VQVAE decoder's convolutions).
        (
            vec![1, 8, 9, 7],
            vec![6, 8, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[], &[]),
        ),
        // Strided, asymmetric pads, batch 2.
        (
            vec![2, 5, 15, 14],
            vec![7, 5, 3, 2],
            false,
            window(&[1, 0, 2, 1], &[2, 3], &[]),
        ),
        // Dilated 5×5.
        (
            vec![1, 3, 12, 12],
            vec![4, 3, 5, 5],
            true,
            window(&[2, 2, 2, 2], &[], &[2, 2]),
        ),
        // 1×1 and 1×k kernels; one output row.
        (
            vec![1, 16, 6, 6],
            vec![32, 16, 1, 1],
            true,
            window(&[], &[], &[]),
        ),
        (
            vec![1, 16, 1, 40],
            vec![8, 16, 1, 3],
            false,
            window(&[0, 1, 0, 1], &[], &[]),
        ),
    ];
    for (x, w, bias, window) in cases {
        let c = Case {
            x,
            w,
            bias,
            window,
            group: 1,
        };
        let (tagged, ins) = c.lower(true);
        let (plain, _) = c.lower(false);
        let what = format!("x {:?} w {:?}", c.x, c.w);
        assert_eq!(tags(&tagged).len(), 1, "{what}");
        assert!(tags(&plain).is_empty(), "{what}");
        for k in &tagged.kernels {
            library::check(&tagged, k).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        let got = eval::run_program(&tagged, &ins).unwrap()[0].to_f64_vec();
        let want = eval::run_program(&plain, &ins).unwrap()[0].to_f64_vec();
        assert_eq!(got.len(), want.len(), "{what}");
        let taps = c.w[1..].iter().product::<usize>() as f64;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * taps, "{what}: [{i}] {g} vs {w}");
        }
    }
}

/// Grouped, 1-D and tiny convolutions keep their forms.
#[test]
fn other_convolutions_are_not_tagged() {
    let grouped = Case {
        x: vec![1, 8, 8, 8],
        w: vec![8, 4, 3, 3],
        bias: false,
        window: window(&[1, 1, 1, 1], &[], &[]),
        group: 2,
    };
    let one_d = Case {
        x: vec![1, 8, 64],
        w: vec![8, 8, 3],
        bias: false,
        window: window(&[1, 1], &[], &[]),
        group: 1,
    };
    let tiny = Case {
        x: vec![1, 1, 3, 3],
        w: vec![1, 1, 2, 2],
        bias: false,
        window: window(&[], &[], &[]),
        group: 1,
    };
    for c in [grouped, one_d, tiny] {
        assert!(tags(&c.lower(true).0).is_empty(), "x {:?}", c.x);
    }
}

/// A tag that does not match its kernel is refused (a backend trusts the
/// tag's addresses).
#[test]
fn wrong_conv_tags_are_refused() {
    let c = Case {
        x: vec![1, 4, 8, 8],
        w: vec![6, 4, 3, 3],
        bias: true,
        window: window(&[1, 1, 1, 1], &[], &[]),
        group: 1,
    };
    let (p, _) = c.lower(true);
    let i = p.kernels.iter().position(|k| k.library.is_some()).unwrap();
    let mutate = |f: &dyn Fn(&mut ConvCall)| {
        let mut p = p.clone();
        let Some(Library::Conv(c)) = &mut p.kernels[i].library else {
            unreachable!()
        };
        f(c);
        library::check(&p, &p.kernels[i])
    };
    assert!(mutate(&|_| {}).is_ok());
    type Mutation<'a> = &'a dyn Fn(&mut ConvCall);
    let cases: [(Mutation, &str); 6] = [
        (&|c| c.in_channels += 1, "reaches elements"),
        (&|c| c.x.offset += 1, "reaches elements"),
        (&|c| c.out_size[1] -= 1, "domain"),
        (&|c| c.w.strides[1] -= 1, "flatten"),
        (&|c| c.out.strides[2] -= 1, "flatten"),
        (&|c| c.strides[0] = 0, "≥ 1"),
    ];
    for (f, want) in cases {
        let err = mutate(f).unwrap_err();
        assert!(err.contains(want), "{err}");
    }
    let err = mutate(&|c| c.x = c.out.clone()).unwrap_err();
    assert!(err.contains("not read") || err.contains("output"), "{err}");
}
