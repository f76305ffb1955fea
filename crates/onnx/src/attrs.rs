//! Typed access to a node's attributes. Each attribute is decoded once into an
//! [`AttrValue`]; op builders take them by name with a typed getter (and a
//! spec default), and [`Attrs::finish`] then refuses any attribute nobody
//! asked for, so a model never loses meaning silently.

use crate::proto::attribute_proto::AttributeType;
use crate::proto::{
    AttributeProto, GraphProto, NodeProto, SparseTensorProto, TensorProto, TypeProto,
};

/// Why a node cannot be imported.
#[derive(Debug)]
pub(crate) enum Issue {
    /// Valid ONNX that varc does not take (listed with every other such node).
    Unsupported(String),
    /// The node itself is malformed.
    Invalid(String),
    /// A fully formed error (for instance about a tensor attribute).
    Error(crate::OnnxError),
}

pub(crate) type R<T> = Result<T, Issue>;

pub(crate) fn unsupported<T>(reason: impl Into<String>) -> R<T> {
    Err(Issue::Unsupported(reason.into()))
}

pub(crate) fn invalid<T>(reason: impl Into<String>) -> R<T> {
    Err(Issue::Invalid(reason.into()))
}

/// One decoded attribute value.
#[derive(Clone, Copy, Debug)]
pub enum AttrValue<'a> {
    Float(f32),
    Int(i64),
    String(&'a [u8]),
    Tensor(&'a TensorProto),
    Graph(&'a GraphProto),
    SparseTensor(&'a SparseTensorProto),
    TypeProto(&'a TypeProto),
    Floats(&'a [f32]),
    Ints(&'a [i64]),
    Strings(&'a [Vec<u8>]),
    Tensors(&'a [TensorProto]),
    Graphs(&'a [GraphProto]),
    SparseTensors(&'a [SparseTensorProto]),
    TypeProtos(&'a [TypeProto]),
}

impl AttrValue<'_> {
    pub fn type_name(&self) -> &'static str {
        match self {
            AttrValue::Float(_) => "FLOAT",
            AttrValue::Int(_) => "INT",
            AttrValue::String(_) => "STRING",
            AttrValue::Tensor(_) => "TENSOR",
            AttrValue::Graph(_) => "GRAPH",
            AttrValue::SparseTensor(_) => "SPARSE_TENSOR",
            AttrValue::TypeProto(_) => "TYPE_PROTO",
            AttrValue::Floats(_) => "FLOATS",
            AttrValue::Ints(_) => "INTS",
            AttrValue::Strings(_) => "STRINGS",
            AttrValue::Tensors(_) => "TENSORS",
            AttrValue::Graphs(_) => "GRAPHS",
            AttrValue::SparseTensors(_) => "SPARSE_TENSORS",
            AttrValue::TypeProtos(_) => "TYPE_PROTOS",
        }
    }
}

/// Decodes an attribute by its `type` discriminator, or, for models written
/// before IR version 2 left it UNDEFINED, by the one value field that is set.
pub fn attr_value(a: &AttributeProto) -> Result<AttrValue<'_>, String> {
    use AttributeType as T;
    let ty = T::try_from(a.r#type)
        .map_err(|_| format!("attribute '{}' has unknown type code {}", a.name, a.r#type))?;
    let ty = if ty == T::Undefined { untyped(a)? } else { ty };
    let missing = || {
        format!(
            "attribute '{}' is typed {} but holds no value",
            a.name,
            ty.as_str()
        )
    };
    Ok(match ty {
        // proto3 writers leave zero scalars out: a missing f/i/s is 0/0/"".
        T::Float => AttrValue::Float(a.f.unwrap_or(0.0)),
        T::Int => AttrValue::Int(a.i.unwrap_or(0)),
        T::String => AttrValue::String(a.s.as_deref().unwrap_or(&[])),
        T::Tensor => AttrValue::Tensor(a.t.as_ref().ok_or_else(missing)?),
        T::Graph => AttrValue::Graph(a.g.as_ref().ok_or_else(missing)?),
        T::SparseTensor => AttrValue::SparseTensor(a.sparse_tensor.as_ref().ok_or_else(missing)?),
        T::TypeProto => AttrValue::TypeProto(a.tp.as_ref().ok_or_else(missing)?),
        T::Floats => AttrValue::Floats(&a.floats),
        T::Ints => AttrValue::Ints(&a.ints),
        T::Strings => AttrValue::Strings(&a.strings),
        T::Tensors => AttrValue::Tensors(&a.tensors),
        T::Graphs => AttrValue::Graphs(&a.graphs),
        T::SparseTensors => AttrValue::SparseTensors(&a.sparse_tensors),
        T::TypeProtos => AttrValue::TypeProtos(&a.type_protos),
        T::Undefined => return Err(missing()),
    })
}

/// The type of an attribute without a discriminator: the one field that is set.
fn untyped(a: &AttributeProto) -> Result<AttributeType, String> {
    use AttributeType as T;
    let set = [
        (a.f.is_some(), T::Float),
        (a.i.is_some(), T::Int),
        (a.s.is_some(), T::String),
        (a.t.is_some(), T::Tensor),
        (a.g.is_some(), T::Graph),
        (a.sparse_tensor.is_some(), T::SparseTensor),
        (a.tp.is_some(), T::TypeProto),
        (!a.floats.is_empty(), T::Floats),
        (!a.ints.is_empty(), T::Ints),
        (!a.strings.is_empty(), T::Strings),
        (!a.tensors.is_empty(), T::Tensors),
        (!a.graphs.is_empty(), T::Graphs),
        (!a.sparse_tensors.is_empty(), T::SparseTensors),
        (!a.type_protos.is_empty(), T::TypeProtos),
    ];
    let found: Vec<T> = set.iter().filter(|(p, _)| *p).map(|&(_, t)| t).collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("attribute '{}' has no type and no value", a.name)),
        many => {
            let names: Vec<_> = many.iter().map(|t| t.as_str()).collect();
            Err(format!(
                "attribute '{}' has no type and several values ({})",
                a.name,
                names.join(", ")
            ))
        }
    }
}

impl AttributeType {
    /// The name as `onnx.proto` spells it.
    pub fn as_str(self) -> &'static str {
        use AttributeType as T;
        match self {
            T::Undefined => "UNDEFINED",
            T::Float => "FLOAT",
            T::Int => "INT",
            T::String => "STRING",
            T::Tensor => "TENSOR",
            T::Graph => "GRAPH",
            T::SparseTensor => "SPARSE_TENSOR",
            T::TypeProto => "TYPE_PROTO",
            T::Floats => "FLOATS",
            T::Ints => "INTS",
            T::Strings => "STRINGS",
            T::Tensors => "TENSORS",
            T::Graphs => "GRAPHS",
            T::SparseTensors => "SPARSE_TENSORS",
            T::TypeProtos => "TYPE_PROTOS",
        }
    }
}

/// A node's attributes, taken one by one by name.
pub(crate) struct Attrs<'a> {
    items: Vec<(&'a str, AttrValue<'a>, bool)>,
}

impl<'a> Attrs<'a> {
    /// Decodes every attribute of `node`. Function references and subgraphs
    /// are unsupported; a duplicate or undecodable attribute is invalid.
    pub fn new(node: &'a NodeProto) -> R<Attrs<'a>> {
        let mut items: Vec<(&'a str, AttrValue<'a>, bool)> =
            Vec::with_capacity(node.attribute.len());
        for a in &node.attribute {
            let name = a.name.as_str();
            if name.is_empty() {
                return invalid("an attribute has no name");
            }
            if !a.ref_attr_name.is_empty() {
                return unsupported(format!(
                    "attribute '{name}' refers to the function attribute '{}' (ref_attr_name), which varc does not support",
                    a.ref_attr_name
                ));
            }
            let v = attr_value(a).map_err(Issue::Invalid)?;
            if matches!(v, AttrValue::Graph(_) | AttrValue::Graphs(_)) {
                return unsupported(format!(
                    "subgraph attribute '{name}' ({}) is not supported",
                    v.type_name()
                ));
            }
            if items.iter().any(|(n, ..)| *n == name) {
                return invalid(format!("attribute '{name}' is given twice"));
            }
            items.push((name, v, false));
        }
        Ok(Attrs { items })
    }

    /// Takes an attribute of any type, marking it used.
    pub fn take(&mut self, name: &str) -> Option<AttrValue<'a>> {
        let (_, v, used) = self.items.iter_mut().find(|(n, ..)| *n == name)?;
        *used = true;
        Some(*v)
    }

    /// Marks an attribute used without reading it (an attribute with no
    /// effect on the ops varc supports).
    pub fn ignore(&mut self, name: &str) {
        self.take(name);
    }

    fn wrong<T>(name: &str, want: &str, got: AttrValue<'_>) -> R<T> {
        invalid(format!(
            "attribute '{name}' must be {want}, not {}",
            got.type_name()
        ))
    }

    pub fn int(&mut self, name: &str) -> R<Option<i64>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Int(i)) => Ok(Some(i)),
            Some(v) => Self::wrong(name, "INT", v),
        }
    }

    pub fn int_or(&mut self, name: &str, default: i64) -> R<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A non-negative INT.
    pub fn usize(&mut self, name: &str) -> R<Option<usize>> {
        match self.int(name)? {
            None => Ok(None),
            Some(i) => match usize::try_from(i) {
                Ok(u) => Ok(Some(u)),
                Err(_) => invalid(format!("attribute '{name}' must not be negative, got {i}")),
            },
        }
    }

    /// An INT used as a boolean: 0 or 1.
    pub fn flag(&mut self, name: &str, default: bool) -> R<bool> {
        match self.int(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(i) => invalid(format!("attribute '{name}' must be 0 or 1, got {i}")),
        }
    }

    pub fn float(&mut self, name: &str) -> R<Option<f32>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Float(f)) => Ok(Some(f)),
            Some(v) => Self::wrong(name, "FLOAT", v),
        }
    }

    pub fn float_or(&mut self, name: &str, default: f32) -> R<f32> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    pub fn string(&mut self, name: &str) -> R<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::String(s)) => match std::str::from_utf8(s) {
                Ok(s) => Ok(Some(s.to_string())),
                Err(_) => invalid(format!("attribute '{name}' is not valid UTF-8")),
            },
            Some(v) => Self::wrong(name, "STRING", v),
        }
    }

    pub fn ints(&mut self, name: &str) -> R<Option<Vec<i64>>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Ints(v)) => Ok(Some(v.to_vec())),
            Some(v) => Self::wrong(name, "INTS", v),
        }
    }

    /// INTS that must all be non-negative.
    pub fn usizes(&mut self, name: &str) -> R<Option<Vec<usize>>> {
        let Some(v) = self.ints(name)? else {
            return Ok(None);
        };
        match v
            .iter()
            .map(|&i| usize::try_from(i))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(u) => Ok(Some(u)),
            Err(_) => invalid(format!(
                "attribute '{name}' must not hold negative values, got {v:?}"
            )),
        }
    }

    pub fn floats(&mut self, name: &str) -> R<Option<Vec<f32>>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Floats(v)) => Ok(Some(v.to_vec())),
            Some(v) => Self::wrong(name, "FLOATS", v),
        }
    }

    pub fn tensor(&mut self, name: &str) -> R<Option<&'a TensorProto>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Tensor(t)) => Ok(Some(t)),
            Some(v) => Self::wrong(name, "TENSOR", v),
        }
    }

    /// Names of the attributes present (used or not).
    pub fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.items.iter().map(|(n, ..)| *n)
    }

    /// Fails on the attributes no getter took: the op does not know them.
    pub fn finish(self) -> R<()> {
        let unknown: Vec<String> = self
            .items
            .iter()
            .filter(|(.., used)| !used)
            .map(|(n, ..)| format!("'{n}'"))
            .collect();
        match unknown.as_slice() {
            [] => Ok(()),
            [one] => unsupported(format!("unknown attribute {one}")),
            many => unsupported(format!("unknown attributes {}", many.join(", "))),
        }
    }
}

/// A required attribute.
pub(crate) fn required<T>(v: Option<T>, name: &str) -> R<T> {
    v.ok_or_else(|| Issue::Invalid(format!("required attribute '{name}' is missing")))
}
