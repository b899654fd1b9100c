//! Key/value cache for incremental decoding: one preallocated `[B, G, capacity, D]` buffer per
//! layer, written in place, so a decode step copies only the new token's keys and values.

use candle_core::{Result, Tensor};

#[derive(Default)]
struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

pub struct KvCache {
    layers: Vec<LayerCache>,
    /// Initial capacity in tokens; buffers double when a sequence outgrows it.
    capacity: usize,
}

impl KvCache {
    pub fn new(num_layers: usize, capacity: usize) -> Self {
        Self { layers: (0..num_layers).map(|_| LayerCache::default()).collect(), capacity: capacity.max(1) }
    }

    /// Tokens cached so far (the same for every layer after a full forward).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.len)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer `layer`'s key and value buffers (`[B, G, capacity, D]`; the first [`Self::len`]
    /// columns hold data), if anything was cached there.
    pub fn layer(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        let c = self.layers.get(layer)?;
        Some((c.k.as_ref()?, c.v.as_ref()?))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `k`, `v` (`[B, G, T, D]`) to `layer` and returns views of everything cached.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let capacity = self.capacity;
        let c = &mut self.layers[layer];
        let (b, g, t, d) = k.dims4()?;
        let needed = c.len + t;
        let have = c.k.as_ref().map_or(0, |k| k.dim(2).unwrap_or(0));
        if needed > have {
            let cap = needed.max(capacity).max(2 * have);
            let grow = |old: &Option<Tensor>| -> Result<Tensor> {
                let buf = Tensor::zeros((b, g, cap, d), k.dtype(), k.device())?;
                if let Some(old) = old {
                    buf.slice_set(&old.narrow(2, 0, c.len)?.contiguous()?, 2, 0)?;
                }
                Ok(buf)
            };
            let (nk, nv) = (grow(&c.k)?, grow(&c.v)?);
            c.k = Some(nk);
            c.v = Some(nv);
        }
        let (kb, vb) = (c.k.as_ref().expect("allocated above"), c.v.as_ref().expect("allocated above"));
        kb.slice_set(&k.contiguous()?, 2, c.len)?;
        vb.slice_set(&v.contiguous()?, 2, c.len)?;
        c.len = needed;
        Ok((kb.narrow(2, 0, needed)?, vb.narrow(2, 0, needed)?))
    }

    /// A cache whose row i is this cache's row `rows[i]` (rows may repeat): the prompt of a
    /// group is prefilled once and its keys and values copied to every sample of the group.
    pub fn select_rows(&self, rows: &[u32]) -> Result<KvCache> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for c in &self.layers {
            let pick = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
                t.as_ref()
                    .map(|t| t.index_select(&Tensor::from_vec(rows.to_vec(), rows.len(), t.device())?, 0))
                    .transpose()
            };
            layers.push(LayerCache { k: pick(&c.k)?, v: pick(&c.v)?, len: c.len });
        }
        Ok(KvCache { layers, capacity: self.capacity })
    }
}
