#pragma once
// The byte-pair-encoding model of tokenizer.json (Sennrich et al. 2016, "Neural Machine
// Translation of Rare Words with Subword Units", §3.1): a piece of text starts as one symbol
// per character and the adjacent pair with the lowest merge rank is merged until no pair has a
// rank. Merging uses a min-heap of candidate pairs over a doubly linked list of symbols, so a
// piece of n characters costs O(n log n); a word cache makes repeated pieces a lookup.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "forge/text/detail/utf8.hpp"

namespace forge::text::detail {

/// Open-addressing hash map from strings to small values. Keys live in one arena and each
/// slot keeps the key's full hash, so a lookup hashes once and compares bytes only on a hash
/// match (std::unordered_map re-hashes chain neighbours on heterogeneous lookups).
template <class V>
class string_map {
 public:
  std::size_t size() const { return size_; }

  void reserve(std::size_t n) {
    if (2 * n > slots_.size()) rehash(capacity_for(n));
  }

  const V* find(std::string_view key) const {
    if (slots_.empty()) return nullptr;
    const std::uint64_t h = hash(key);
    for (std::size_t i = h & mask(); slots_[i].len != empty; i = (i + 1) & mask()) {
      const slot& sl = slots_[i];
      if (sl.hash == h && sl.len == key.size() &&
          std::string_view(arena_).substr(sl.off, sl.len) == key)
        return &sl.value;
    }
    return nullptr;
  }

  /// Sets the value of `key`, inserting it if absent.
  void insert_or_assign(std::string_view key, V value) {
    if (2 * (size_ + 1) > slots_.size()) rehash(capacity_for(size_ + 1));
    const std::uint64_t h = hash(key);
    std::size_t i = h & mask();
    for (; slots_[i].len != empty; i = (i + 1) & mask()) {
      slot& sl = slots_[i];
      if (sl.hash == h && sl.len == key.size() &&
          std::string_view(arena_).substr(sl.off, sl.len) == key) {
        sl.value = value;
        return;
      }
    }
    slots_[i] = {h, static_cast<std::uint32_t>(arena_.size()),
                 static_cast<std::uint32_t>(key.size()), value};
    arena_.append(key);
    ++size_;
  }

  /// Bytes held by the keys.
  std::size_t key_bytes() const { return arena_.size(); }

 private:
  static constexpr std::uint32_t empty = ~std::uint32_t{0};
  struct slot {
    std::uint64_t hash = 0;
    std::uint32_t off = 0;
    std::uint32_t len = empty;
    V value{};
  };
  static std::uint64_t hash(std::string_view k) { return std::hash<std::string_view>{}(k); }
  static std::size_t capacity_for(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    return cap;
  }
  std::size_t mask() const { return slots_.size() - 1; }
  void rehash(std::size_t cap) {
    std::vector<slot> old = std::move(slots_);
    slots_.assign(cap, slot{});
    for (const slot& sl : old) {
      if (sl.len == empty) continue;
      std::size_t i = sl.hash & mask();
      while (slots_[i].len != empty) i = (i + 1) & mask();
      slots_[i] = sl;
    }
  }

  std::vector<slot> slots_;
  std::string arena_;
  std::size_t size_ = 0;
};

/// Token string -> id.
using vocab_map = string_map<std::int32_t>;

/// Open-addressing hash map from a symbol pair (two token ids) to (merge rank, merged id).
class pair_merge_map {
 public:
  struct merge {
    std::uint32_t rank;
    std::int32_t id;
  };

  void reserve(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 2 * n + 2) cap <<= 1;
    keys_.assign(cap, empty);
    vals_.assign(cap, merge{0, 0});
    size_ = 0;
  }

  /// Inserts or overwrites (a later duplicate merge wins, as in the reference).
  void put(std::int32_t a, std::int32_t b, merge m) {
    if (2 * (size_ + 1) > keys_.size()) grow();
    const std::uint64_t k = key(a, b);
    std::size_t i = slot(k);
    while (keys_[i] != empty && keys_[i] != k) i = (i + 1) & (keys_.size() - 1);
    if (keys_[i] == empty) ++size_;
    keys_[i] = k;
    vals_[i] = m;
  }

  const merge* get(std::int32_t a, std::int32_t b) const {
    if (keys_.empty()) return nullptr;
    const std::uint64_t k = key(a, b);
    std::size_t i = slot(k);
    for (;;) {
      if (keys_[i] == k) return &vals_[i];
      if (keys_[i] == empty) return nullptr;
      i = (i + 1) & (keys_.size() - 1);
    }
  }

  std::size_t size() const { return size_; }

 private:
  static constexpr std::uint64_t empty = ~std::uint64_t{0};
  static std::uint64_t key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }
  std::size_t slot(std::uint64_t k) const {
    // Fibonacci hashing spreads the structured (id, id) keys over the table.
    return static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & (keys_.size() - 1);
  }
  void grow() {
    std::vector<std::uint64_t> old_keys = std::move(keys_);
    std::vector<merge> old_vals = std::move(vals_);
    const std::size_t cap = std::max<std::size_t>(16, old_keys.size() * 2);
    keys_.assign(cap, empty);
    vals_.assign(cap, merge{0, 0});
    size_ = 0;
    for (std::size_t i = 0; i < old_keys.size(); ++i)
      if (old_keys[i] != empty)
        put(static_cast<std::int32_t>(old_keys[i] >> 32),
            static_cast<std::int32_t>(old_keys[i] & 0xFFFFFFFFu), old_vals[i]);
  }

  std::vector<std::uint64_t> keys_;
  std::vector<merge> vals_;
  std::size_t size_ = 0;
};

/// Cache of finished pieces: piece text -> its ids, stored in one pool.
class word_cache {
 public:
  explicit word_cache(std::size_t capacity = 1u << 18) : capacity_(capacity) {}

  /// Appends the cached ids of `piece` to `out` and returns true, or returns false.
  bool lookup(std::string_view piece, std::vector<std::int32_t>& out) const {
    const auto* at = map_.find(piece);
    if (!at) return false;
    out.insert(out.end(), pool_.begin() + at->first, pool_.begin() + at->first + at->second);
    return true;
  }

  void insert(std::string_view piece, const std::int32_t* ids, std::size_t n) {
    // Bounded in entries and key bytes, so a long text of unique pieces cannot grow it forever.
    if (map_.size() >= capacity_ || map_.key_bytes() >= 64 * capacity_) return;
    const auto at = static_cast<std::uint32_t>(pool_.size());
    pool_.insert(pool_.end(), ids, ids + n);
    map_.insert_or_assign(piece, std::make_pair(at, static_cast<std::uint32_t>(n)));
  }

 private:
  std::size_t capacity_;
  string_map<std::pair<std::uint32_t, std::uint32_t>> map_;
  std::vector<std::int32_t> pool_;
};

/// Working memory of one BPE call, reused across pieces.
struct bpe_scratch {
  struct symbol {
    std::int32_t id;
    std::int32_t prev;
    std::int32_t next;
    std::uint32_t len;  // bytes of the piece covered; 0 once merged into its left neighbour
  };
  struct candidate {
    std::uint32_t rank;
    std::uint32_t pos;
    std::int32_t id;
  };
  std::vector<symbol> symbols;
  std::vector<candidate> heap;
  std::string buf;
  std::vector<std::int32_t> ids;
};

/// The BPE model's settings and tables (tokenizer.json "model" of type "BPE").
struct bpe_model {
  vocab_map vocab;
  std::vector<std::string> id_to_token;  ///< token string of each id ("" where unused)
  std::vector<bool> has_id;              ///< whether the vocabulary uses each id
  pair_merge_map merges;
  std::optional<std::int32_t> unk_id;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::int32_t byte_ids[256] = {};  ///< id of "<0xXX>" or -1 (filled when byte_fallback)

  /// Looks a token string up in the vocabulary.
  std::optional<std::int32_t> find(std::string_view token) const {
    if (const auto* id = vocab.find(token)) return *id;
    return std::nullopt;
  }

  /// Fills byte_ids from the vocabulary.
  void index_bytes() {
    static constexpr char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      std::string t = "<0x";
      t += hex[b >> 4];
      t += hex[b & 15];
      t += '>';
      auto id = find(t);
      byte_ids[b] = id ? *id : -1;
    }
  }

  /// True when no token holds '▁' (U+2581) right after another character and '▁' is itself
  /// a token: then no merge crosses the boundary before a '▁' that follows another character,
  /// and a piece may be cut there without changing the result (merges on disjoint parts
  /// commute). SentencePiece-style vocabularies (Llama-2, Mistral) have this property; it
  /// turns their unsplit text into word-sized pieces the cache can serve.
  bool meta_boundaries = false;

  /// Decides meta_boundaries from the vocabulary.
  void index_meta_boundaries() {
    static constexpr std::string_view meta = "\xE2\x96\x81";
    // A subword prefix or word suffix depends on where a piece starts and ends: no cutting.
    meta_boundaries =
        continuing_subword_prefix.empty() && end_of_word_suffix.empty() && find(meta).has_value();
    for (std::size_t id = 0; meta_boundaries && id < id_to_token.size(); ++id)
      if (has_id[id] && crosses_meta_boundary(id_to_token[id])) meta_boundaries = false;
  }

  /// Appends the ids of one pre-tokenized piece (valid, non-empty UTF-8) to `out`.
  void tokenize(std::string_view piece, std::vector<std::int32_t>& out, bpe_scratch& s,
                word_cache* cache) const {
    if (!meta_boundaries) {
      tokenize_part(piece, out, s, cache);
      return;
    }
    std::size_t start = 0;
    for (std::size_t p = next_meta_boundary(piece, 0); p != std::string_view::npos;
         p = next_meta_boundary(piece, p + 3)) {
      tokenize_part(piece.substr(start, p - start), out, s, cache);
      start = p;
    }
    tokenize_part(piece.substr(start), out, s, cache);
  }

 private:
  static bool is_meta_at(std::string_view t, std::size_t p) {
    return p + 3 <= t.size() && t[p] == '\xE2' && t[p + 1] == '\x96' && t[p + 2] == '\x81';
  }
  // Offset of the next '▁' at or after `from` that follows a character other than '▁'.
  static std::size_t next_meta_boundary(std::string_view t, std::size_t from) {
    for (std::size_t p = t.find("\xE2\x96\x81", from); p != std::string_view::npos;
         p = t.find("\xE2\x96\x81", p + 3))
      if (p > 0 && !(p >= 3 && is_meta_at(t, p - 3))) return p;
    return std::string_view::npos;
  }
  static bool crosses_meta_boundary(std::string_view t) {
    return next_meta_boundary(t, 0) != std::string_view::npos;
  }

  void tokenize_part(std::string_view piece, std::vector<std::int32_t>& out, bpe_scratch& s,
                     word_cache* cache) const {
    if (piece.empty()) return;
    if (ignore_merges) {
      if (auto id = find(piece)) {
        out.push_back(*id);
        return;
      }
    }
    if (cache && cache->lookup(piece, out)) return;
    const std::size_t before = out.size();
    merge_piece(piece, out, s);
    // Long pieces are rarely repeated; the reference caches only pieces under 256 bytes too.
    if (cache && piece.size() < 256) cache->insert(piece, out.data() + before, out.size() - before);
  }

  void push_symbol(bpe_scratch& s, std::int32_t id, std::uint32_t len) const {
    const auto n = static_cast<std::int32_t>(s.symbols.size());
    s.symbols.push_back({id, n - 1, -1, len});
    if (n > 0) s.symbols[static_cast<std::size_t>(n - 1)].next = n;
  }

  void merge_piece(std::string_view w, std::vector<std::int32_t>& out, bpe_scratch& s) const {
    s.symbols.clear();
    // Pending unknown symbol (byte length; 0 = none), emitted when a known symbol follows.
    std::uint32_t unk_len = 0;
    std::size_t i = 0;
    while (i < w.size()) {
      const std::size_t start = i;
      next_code_point(w, i);
      const auto byte_len = static_cast<std::uint32_t>(i - start);
      const bool first = start == 0, last = i == w.size();
      std::string_view sym = w.substr(start, byte_len);
      if ((!first && !continuing_subword_prefix.empty()) || (last && !end_of_word_suffix.empty())) {
        s.buf.clear();
        if (!first) s.buf += continuing_subword_prefix;
        s.buf += sym;
        if (last) s.buf += end_of_word_suffix;
        sym = s.buf;
      }
      if (auto id = find(sym)) {
        if (unk_len) {
          push_symbol(s, *unk_id, unk_len);
          unk_len = 0;
        }
        push_symbol(s, *id, byte_len);
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        for (char c : sym) all = all && byte_ids[static_cast<unsigned char>(c)] >= 0;
        if (all) {
          // As in the reference, a pending unknown symbol stays pending across byte tokens.
          for (char c : sym) push_symbol(s, byte_ids[static_cast<unsigned char>(c)], 1);
          continue;
        }
      }
      if (unk_id) {
        if (unk_len && fuse_unk) {
          unk_len += byte_len;
        } else {
          if (unk_len) push_symbol(s, *unk_id, unk_len);
          unk_len = byte_len;
        }
      }
      // Without an unknown token the character produces no symbol, as in the reference.
    }
    if (unk_len) push_symbol(s, *unk_id, unk_len);
    merge_all(s);
    for (std::int32_t k = s.symbols.empty() ? -1 : 0; k != -1;
         k = s.symbols[static_cast<std::size_t>(k)].next)
      out.push_back(s.symbols[static_cast<std::size_t>(k)].id);
  }

  void merge_all(bpe_scratch& s) const {
    auto& sym = s.symbols;
    auto& heap = s.heap;
    heap.clear();
    // Min-heap on (rank, position): the lowest rank merges first, ties go left to right.
    const auto worse = [](const bpe_scratch::candidate& a, const bpe_scratch::candidate& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    for (std::size_t k = 0; k + 1 < sym.size(); ++k)
      if (const auto* m = merges.get(sym[k].id, sym[k + 1].id))
        heap.push_back({m->rank, static_cast<std::uint32_t>(k), m->id});
    std::make_heap(heap.begin(), heap.end(), worse);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), worse);
      const auto top = heap.back();
      heap.pop_back();
      auto& cur = sym[top.pos];
      if (cur.len == 0 || cur.next == -1) continue;
      const auto right_pos = static_cast<std::size_t>(cur.next);
      const auto right = sym[right_pos];
      // Stale candidate: the pair at this position changed since it was queued.
      const auto* m = merges.get(cur.id, right.id);
      if (!m || m->id != top.id) continue;
      cur.id = top.id;
      cur.len += right.len;
      cur.next = right.next;
      sym[right_pos].len = 0;
      if (right.next != -1)
        sym[static_cast<std::size_t>(right.next)].prev = static_cast<std::int32_t>(top.pos);
      if (cur.prev != -1) {
        const auto p = static_cast<std::size_t>(cur.prev);
        if (const auto* pm = merges.get(sym[p].id, cur.id)) {
          heap.push_back({pm->rank, static_cast<std::uint32_t>(p), pm->id});
          std::push_heap(heap.begin(), heap.end(), worse);
        }
      }
      if (cur.next != -1) {
        if (const auto* nm = merges.get(cur.id, sym[static_cast<std::size_t>(cur.next)].id)) {
          heap.push_back({nm->rank, top.pos, nm->id});
          std::push_heap(heap.begin(), heap.end(), worse);
        }
      }
    }
  }
};

}  // namespace forge::text::detail
