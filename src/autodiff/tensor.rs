//! Shapes (up to 4-D) and contiguous row-major tensors.

use std::fmt;

use benign_kernels::Float;

/// The most dimensions a tensor may have.
pub const MAX_RANK: usize = 4;

/// A tensor shape of rank 0 (a scalar) to [`MAX_RANK`]. Row-major: the last axis is contiguous.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl Shape {
    /// A shape from its dimensions. Panics if there are more than [`MAX_RANK`] of them.
    pub fn new(dims: &[usize]) -> Self {
        assert!(
            dims.len() <= MAX_RANK,
            "shape {dims:?} has rank {} but tensors have at most {MAX_RANK} dimensions",
            dims.len()
        );
        let mut all = [1; MAX_RANK];
        all[..dims.len()].copy_from_slice(dims);
        Shape {
            dims: all,
            rank: dims.len(),
        }
    }

    /// The rank-0 shape of a scalar (one element).
    pub fn scalar() -> Self {
        Shape::new(&[])
    }

    /// The dimensions, outermost first (empty for a scalar).
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// Number of dimensions (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// Size of `axis`; panics with the shape in the message if the axis does not exist.
    pub fn dim(&self, axis: usize) -> usize {
        assert!(
            axis < self.rank,
            "axis {axis} out of range for shape {self}"
        );
        self.dims[axis]
    }

    /// Size of the last axis (1 for a scalar).
    pub fn last(&self) -> usize {
        if self.rank == 0 {
            1
        } else {
            self.dims[self.rank - 1]
        }
    }

    /// `(outer, axis, inner)`: the tensor seen as a 3-D block around `axis`.
    pub fn split_at_axis(&self, axis: usize) -> (usize, usize, usize) {
        let d = self.dim(axis);
        let outer = self.dims[..axis].iter().product();
        let inner = self.dims[axis + 1..self.rank].iter().product();
        (outer, d, inner)
    }

    /// This shape with `axis` removed.
    pub fn without_axis(&self, axis: usize) -> Shape {
        let mut dims = self.dims().to_vec();
        dims.remove(axis);
        Shape::new(&dims)
    }

    /// This shape with `axis` resized to `len`.
    pub fn with_axis(&self, axis: usize, len: usize) -> Shape {
        let mut s = *self;
        assert!(
            axis < self.rank,
            "axis {axis} out of range for shape {self}"
        );
        s.dims[axis] = len;
        s
    }

    /// Row-major strides.
    pub fn strides(&self) -> [usize; MAX_RANK] {
        let mut strides = [0; MAX_RANK];
        let mut acc = 1;
        for axis in (0..self.rank).rev() {
            strides[axis] = acc;
            acc *= self.dims[axis];
        }
        strides
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.dims().iter().enumerate() {
            if i > 0 {
                write!(f, "x")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A contiguous row-major tensor that owns its elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    /// The dimensions.
    pub shape: Shape,
    /// The elements, row-major over `shape`.
    pub data: Vec<T>,
}

impl<T: Float> Tensor<T> {
    /// A tensor from its dimensions and elements; panics if the counts disagree.
    pub fn new(dims: &[usize], data: Vec<T>) -> Self {
        let shape = Shape::new(dims);
        assert_eq!(
            shape.numel(),
            data.len(),
            "shape {shape} needs {} elements, got {}",
            shape.numel(),
            data.len()
        );
        Tensor { shape, data }
    }

    /// A tensor of zeros of the given dimensions.
    pub fn zeros(dims: &[usize]) -> Self {
        let shape = Shape::new(dims);
        Tensor {
            shape,
            data: vec![T::ZERO; shape.numel()],
        }
    }

    /// A rank-0 tensor holding `value`.
    pub fn scalar(value: T) -> Self {
        Tensor {
            shape: Shape::scalar(),
            data: vec![value],
        }
    }

    /// A tensor with elements converted from f64.
    pub fn from_f64(dims: &[usize], data: &[f64]) -> Self {
        Tensor::new(dims, data.iter().map(|&v| T::from_f64(v)).collect())
    }
}
