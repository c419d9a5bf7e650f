#pragma once
// The extension point of the token embedding: a table that replaces the dense
// model.embed_tokens.weight (e.g. a quantized one, adapters::quantized_embedding). The model
// asks it for one row per token; it is frozen (no gradient).

#include <cstdint>

namespace forge::model {

/// Replaces the dense token-embedding matrix [vocab, hidden] with another representation.
template <class T>
class embedding_table {
 public:
  virtual ~embedding_table() = default;
  /// Writes row `id` (hidden values) of the embedding matrix to `out`.
  virtual void row(std::int64_t id, T* out) const = 0;
};

}  // namespace forge::model
