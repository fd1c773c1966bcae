//! Matrix views: a slice with its shape, leading dimension and (for read-only views) whether it
//! is used transposed.
//!
//! The kernels take matrices as [`MatRef`] (read) and [`MatMut`] (written) instead of a slice
//! followed by its rows, columns, leading dimension and transpose flag: the shape travels with
//! the data, a view is checked once when it is made, and a product's dimensions are compared
//! between views instead of being passed twice.
//!
//! Storage is always row-major (the crate contract): element `(i, j)` of a stored `rows x cols`
//! matrix with leading dimension `ld` is `data[i * ld + j]`. A [`MatRef`] may be marked
//! transposed ([`MatRef::transpose`]); its *logical* shape ([`MatRef::rows`],
//! [`MatRef::cols`]) is then `cols x rows` of the storage, and [`MatRef::at`] reads element
//! `(i, j)` of the transposed matrix. This is ndarray's and faer's view with the strides
//! restricted to `(ld, 1)` and `(1, ld)`, the two layouts every kernel here is written for.

/// Whether an operand is used as stored (`No`) or transposed (`Yes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transpose {
    /// The operand as stored: `op(A) = A`.
    No,
    /// The operand's transpose: `op(A) = A^T`, read from the same storage.
    Yes,
}

impl Transpose {
    /// The other one: a transposed view of a transposed view is the stored matrix.
    pub fn flip(self) -> Transpose {
        match self {
            Transpose::No => Transpose::Yes,
            Transpose::Yes => Transpose::No,
        }
    }
}

/// Panics unless a `rows x cols` matrix with leading dimension `ld` fits in `len` elements
/// (any `ld` is fine when the matrix is empty).
fn check_storage(rows: usize, cols: usize, ld: usize, len: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        ld >= cols,
        "matrix view: leading dimension {ld} is smaller than its {cols} columns"
    );
    let needed = (rows - 1) * ld + cols;
    assert!(
        len >= needed,
        "matrix view: {len} elements, a {rows} x {cols} matrix with leading dimension {ld} needs \
         {needed}"
    );
}

/// A read-only view of a row-major matrix, used as stored or transposed.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    stored_rows: usize,
    stored_cols: usize,
    ld: usize,
    trans: Transpose,
}

impl<'a, T> MatRef<'a, T> {
    /// The `rows x cols` matrix stored contiguously (leading dimension `cols`) at the start of
    /// `data`.
    ///
    /// # Panics
    ///
    /// If `data` is shorter than `rows * cols`.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::with_ld(data, rows, cols, cols)
    }

    /// The `rows x cols` matrix whose element `(i, j)` is `data[i * ld + j]`.
    ///
    /// # Panics
    ///
    /// If `ld < cols` or `data` is too short for the last element (unless the matrix is empty).
    pub fn with_ld(data: &'a [T], rows: usize, cols: usize, ld: usize) -> Self {
        check_storage(rows, cols, ld, data.len());
        MatRef {
            data,
            stored_rows: rows,
            stored_cols: cols,
            ld,
            trans: Transpose::No,
        }
    }

    /// `op(X)` as a `rows x cols` matrix, X stored with leading dimension `ld`: X is
    /// `rows x cols` when `trans == No`, `cols x rows` when `trans == Yes`.
    ///
    /// # Panics
    ///
    /// As [`MatRef::with_ld`], for the stored shape.
    pub fn op_with_ld(
        trans: Transpose,
        data: &'a [T],
        rows: usize,
        cols: usize,
        ld: usize,
    ) -> Self {
        match trans {
            Transpose::No => Self::with_ld(data, rows, cols, ld),
            Transpose::Yes => Self::with_ld(data, cols, rows, ld).transpose(),
        }
    }

    /// The same storage used as its transpose.
    #[must_use]
    pub fn transpose(self) -> Self {
        MatRef {
            trans: self.trans.flip(),
            ..self
        }
    }

    /// The same storage used transposed when `trans == Yes`, as this view otherwise.
    #[must_use]
    pub fn op(self, trans: Transpose) -> Self {
        match trans {
            Transpose::No => self,
            Transpose::Yes => self.transpose(),
        }
    }

    /// Rows of the matrix as used (`op(X)`).
    pub fn rows(&self) -> usize {
        match self.trans {
            Transpose::No => self.stored_rows,
            Transpose::Yes => self.stored_cols,
        }
    }

    /// Columns of the matrix as used (`op(X)`).
    pub fn cols(&self) -> usize {
        match self.trans {
            Transpose::No => self.stored_cols,
            Transpose::Yes => self.stored_rows,
        }
    }

    /// Rows of the storage.
    pub fn stored_rows(&self) -> usize {
        self.stored_rows
    }

    /// Columns of the storage.
    pub fn stored_cols(&self) -> usize {
        self.stored_cols
    }

    /// Leading dimension of the storage.
    pub fn ld(&self) -> usize {
        self.ld
    }

    /// Whether the storage is used transposed.
    pub fn trans(&self) -> Transpose {
        self.trans
    }

    /// The storage (at least as long as the last element needs).
    pub fn data(&self) -> &'a [T] {
        self.data
    }
}

impl<'a, T> MatRef<'a, T> {
    /// The elements of a one-row or one-column matrix, in order, when they are adjacent in
    /// storage (the stored matrix has one row, or one column with leading dimension 1).
    pub(crate) fn as_vector(&self) -> Option<&'a [T]> {
        // `ld >= cols`, so `ld == 1` means at most one stored column.
        let adjacent = self.stored_rows <= 1 || self.ld == 1;
        adjacent.then(|| &self.data[..self.stored_rows * self.stored_cols])
    }
}

impl<T: Copy> MatRef<'_, T> {
    /// Element `(i, j)` of the matrix as used.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> T {
        match self.trans {
            Transpose::No => self.data[i * self.ld + j],
            Transpose::Yes => self.data[j * self.ld + i],
        }
    }
}

impl<'a, T: 'static> MatRef<'a, T> {
    /// The same view with element type `U`, which must be `T` (see [`crate::simd::cast`]).
    pub(crate) fn cast<U: 'static>(self) -> MatRef<'a, U> {
        MatRef {
            data: crate::simd::cast(self.data),
            stored_rows: self.stored_rows,
            stored_cols: self.stored_cols,
            ld: self.ld,
            trans: self.trans,
        }
    }
}

/// A writable view of a row-major matrix (outputs are never transposed).
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// The `rows x cols` matrix stored contiguously (leading dimension `cols`) at the start of
    /// `data`.
    ///
    /// # Panics
    ///
    /// If `data` is shorter than `rows * cols`.
    pub fn new(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self::with_ld(data, rows, cols, cols)
    }

    /// The `rows x cols` matrix whose element `(i, j)` is `data[i * ld + j]`.
    ///
    /// # Panics
    ///
    /// If `ld < cols` or `data` is too short for the last element (unless the matrix is empty).
    pub fn with_ld(data: &'a mut [T], rows: usize, cols: usize, ld: usize) -> Self {
        check_storage(rows, cols, ld, data.len());
        MatMut {
            data,
            rows,
            cols,
            ld,
        }
    }

    /// Rows of the matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Leading dimension of the storage: element `(i, j)` is `data[i * ld + j]`.
    pub fn ld(&self) -> usize {
        self.ld
    }

    /// A shorter-lived writable view of the same matrix.
    pub fn rb_mut(&mut self) -> MatMut<'_, T> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            ld: self.ld,
        }
    }

    /// A read-only view of the same matrix.
    pub fn rb(&self) -> MatRef<'_, T> {
        MatRef {
            data: self.data,
            stored_rows: self.rows,
            stored_cols: self.cols,
            ld: self.ld,
            trans: Transpose::No,
        }
    }

    /// The storage (at least as long as the last element needs).
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }

    /// The storage, for the lifetime of the view.
    pub fn into_data(self) -> &'a mut [T] {
        self.data
    }
}

impl<'a, T: 'static> MatMut<'a, T> {
    /// The same view with element type `U`, which must be `T` (see [`crate::simd::cast_mut`]).
    pub(crate) fn cast<U: 'static>(self) -> MatMut<'a, U> {
        MatMut {
            data: crate::simd::cast_mut(self.data),
            rows: self.rows,
            cols: self.cols,
            ld: self.ld,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_view_reads_the_storage_transposed() {
        // 2 x 3 stored with leading dimension 4
        let data = [1.0, 2.0, 3.0, -1.0, 4.0, 5.0, 6.0];
        let a = MatRef::with_ld(&data, 2, 3, 4);
        assert_eq!((a.rows(), a.cols(), a.at(1, 2)), (2, 3, 6.0));
        let t = a.transpose();
        assert_eq!((t.rows(), t.cols(), t.at(2, 1)), (3, 2, 6.0));
        assert_eq!(t.transpose().trans(), Transpose::No);
        assert_eq!(a.op(Transpose::Yes).at(0, 1), 4.0);
    }

    #[test]
    fn empty_views_accept_any_leading_dimension() {
        let data: [f32; 0] = [];
        let a = MatRef::with_ld(&data, 0, 5, 0);
        assert_eq!((a.rows(), a.cols()), (0, 5));
        let mut out: [f32; 0] = [];
        assert_eq!(MatMut::with_ld(&mut out, 3, 0, 0).rows(), 3);
    }

    #[test]
    #[should_panic(expected = "leading dimension 2 is smaller than its 3 columns")]
    fn short_leading_dimension_panics() {
        MatRef::with_ld(&[0.0; 9], 3, 3, 2);
    }

    #[test]
    #[should_panic(expected = "8 elements, a 3 x 3 matrix with leading dimension 3 needs 9")]
    fn short_slice_panics() {
        MatMut::new(&mut [0.0; 8], 3, 3);
    }
}
