//! Structured values out of fuzz bytes. Reads past the end give zeros, so
//! every input, however short, decodes to something.

pub struct Input<'bytes> {
    bytes: &'bytes [u8],
}

impl<'bytes> Input<'bytes> {
    pub fn new(bytes: &'bytes [u8]) -> Input<'bytes> {
        Input { bytes }
    }

    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((first, rest)) => {
                self.bytes = rest;
                *first
            }
            None => 0,
        }
    }

    /// A number below `bound` (which must not be 0).
    pub fn below(&mut self, bound: usize) -> usize {
        usize::from(self.byte()) % bound
    }

    /// One of `choices` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len())]
    }

    /// Up to `len` bytes, fewer at the end of the input.
    pub fn take(&mut self, len: usize) -> &'bytes [u8] {
        let (taken, rest) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }
}
