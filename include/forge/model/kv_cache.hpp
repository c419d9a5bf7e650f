#pragma once
// The key/value cache for incremental decoding. Slots are shared across the batch (as in
// transformers' DynamicCache): a call with S new tokens fills slots [length, length + S) of
// every row, and a per-slot mask remembers which slots hold real tokens (left padding of
// batched prompts of different lengths leaves masked slots). Keys are stored after RoPE.
// Memory: 2 · layers · batch · capacity · kv_heads · head_dim scalars.

#include <cstdint>
#include <string>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/model/config.hpp"

namespace forge::model {

/// Cached keys and values of every layer for a batch of sequences.
template <class T>
struct kv_cache {
  std::int64_t batch = 0, capacity = 0, kv_heads = 0, head_dim = 0;
  std::int64_t length = 0;           ///< slots filled so far
  std::vector<std::vector<T>> k, v;  ///< per layer [batch, capacity, kv_heads, head_dim]
  std::vector<unsigned char> mask;   ///< [batch, capacity], 1 = a real token

  kv_cache() = default;
  /// An empty cache for `batch` sequences of up to `capacity` slots.
  kv_cache(const model_config& c, std::int64_t batch_, std::int64_t capacity_)
      : batch(batch_), capacity(capacity_), kv_heads(c.num_key_value_heads), head_dim(c.head_dim) {
    const auto n = static_cast<std::size_t>(batch * capacity * kv_heads * head_dim);
    k.assign(static_cast<std::size_t>(c.num_hidden_layers), std::vector<T>(n));
    v.assign(static_cast<std::size_t>(c.num_hidden_layers), std::vector<T>(n));
    mask.assign(static_cast<std::size_t>(batch * capacity), 0);
  }
  /// Forgets every slot from `n` on (reuse a shared prefix across calls).
  void truncate(std::int64_t n) {
    if (n < 0 || n > length)
      throw error({.what = "cannot truncate the cache past its length",
                   .expected = "0.." + std::to_string(length),
                   .found = std::to_string(n)});
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t j = n; j < length; ++j) mask[b * capacity + j] = 0;
    length = n;
  }
};

}  // namespace forge::model
