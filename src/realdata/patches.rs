//! Image tokens: non-overlapping square patches, as in ViT.
//!
//! An `h x w` image with patch size `p` (dividing both sides) gives `(h/p) * (w/p)` tokens in
//! row-major patch order; token `(pr, pc)` holds the `p x p` pixels
//! `image[pr*p + r][pc*p + c]` for `r, c < p`, row-major, scaled by 1/255 to [0, 1]. For MNIST,
//! `p = 4` gives 49 tokens of dimension 16.

use super::{ImageSplit, TokenizedSplit, Tokens};
use crate::{Error, Result};

/// The `n x tokens x patch^2` patch values of `split` (see the module docs).
/// A patch size of 0 or one that does not divide the image sides is an
/// [`Error::InvalidOption`] naming `patch`.
pub fn patchify(split: &ImageSplit, patch: usize) -> Result<TokenizedSplit> {
    let (height, width) = (split.height, split.width);
    if patch == 0 || height % patch != 0 || width % patch != 0 || height == 0 || width == 0 {
        let divisors: Vec<String> = (1..=height.min(width))
            .filter(|p| height % p == 0 && width % p == 0)
            .map(|p| p.to_string())
            .collect();
        return Err(Error::invalid(
            "patch",
            format!(
                "{patch} does not tile {height}x{width} images into whole patches \
                 (valid: {})",
                divisors.join(", ")
            ),
        ));
    }
    let n = split.len();
    let image_size = height * width;
    if split.pixels.len() != n * image_size {
        return Err(Error::invalid(
            "split",
            format!(
                "{} pixel bytes for {n} images of {height}x{width}",
                split.pixels.len()
            ),
        ));
    }
    let (rows, cols) = (height / patch, width / patch);
    let seq_len = rows * cols;
    let patch_dim = patch * patch;
    let mut values = Vec::with_capacity(n * seq_len * patch_dim);
    for image in split.pixels.chunks_exact(image_size.max(1)).take(n) {
        for patch_row in 0..rows {
            for patch_col in 0..cols {
                for r in 0..patch {
                    let start = (patch_row * patch + r) * width + patch_col * patch;
                    values.extend(
                        image[start..start + patch]
                            .iter()
                            .map(|&p| f32::from(p) / 255.0),
                    );
                }
            }
        }
    }
    Ok(TokenizedSplit {
        n,
        seq_len,
        num_classes: split.num_classes,
        tokens: Tokens::Patches { patch_dim, values },
        labels: split.labels.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(height: usize, width: usize, n: usize) -> ImageSplit {
        ImageSplit {
            height,
            width,
            pixels: (0..n * height * width).map(|i| (i % 251) as u8).collect(),
            labels: (0..n as u32).map(|i| i % 3).collect(),
            num_classes: 3,
        }
    }

    #[test]
    fn patches_match_a_direct_index_computation() {
        for (h, w, p) in [(28, 28, 4), (28, 28, 7), (6, 4, 2), (5, 5, 5), (3, 6, 1)] {
            let images = split(h, w, 3);
            let tokens = patchify(&images, p).unwrap();
            let Tokens::Patches { patch_dim, values } = &tokens.tokens else {
                panic!("image tokens must be patches");
            };
            assert_eq!(
                (tokens.n, tokens.seq_len, *patch_dim),
                (3, h / p * (w / p), p * p)
            );
            assert_eq!(values.len(), 3 * tokens.seq_len * p * p);
            assert_eq!(tokens.labels, images.labels);
            let cols = w / p;
            for i in 0..3 {
                for t in 0..tokens.seq_len {
                    for k in 0..p * p {
                        let (row, col) = ((t / cols) * p + k / p, (t % cols) * p + k % p);
                        let pixel = images.pixels[i * h * w + row * w + col];
                        let got = values[(i * tokens.seq_len + t) * p * p + k];
                        assert_eq!(got, f32::from(pixel) / 255.0, "{h}x{w} p{p} i{i} t{t} k{k}");
                    }
                }
            }
        }
    }

    #[test]
    fn mnist_shape_gives_49_tokens_of_16() {
        let tokens = patchify(&split(28, 28, 2), 4).unwrap();
        assert_eq!((tokens.seq_len, tokens.num_classes), (49, 3));
        let Tokens::Patches { patch_dim, values } = tokens.tokens else {
            unreachable!()
        };
        assert_eq!(patch_dim, 16);
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn bad_patch_sizes_name_the_field() {
        for p in [0, 3, 5, 29] {
            let err = patchify(&split(28, 28, 1), p).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidOption { field, .. } if field == "patch"),
                "{err}"
            );
            assert!(
                err.to_string().contains("valid: 1, 2, 4, 7, 14, 28"),
                "{err}"
            );
        }
        let mut broken = split(4, 4, 2);
        broken.pixels.pop();
        assert!(patchify(&broken, 2).is_err());
    }

    #[test]
    fn empty_split_gives_empty_tokens() {
        let tokens = patchify(&split(8, 8, 0), 4).unwrap();
        assert_eq!((tokens.n, tokens.seq_len), (0, 4));
    }
}
