#pragma once
// Scaled dot-product attention with grouped key/value heads (GQA, Ainslie et al. 2023),
// causal order, a key padding mask and an optional sliding window (Mistral), as in
// transformers' eager_attention_forward:
//   s_ij = scale · q_i·k_j  for allowed j,   p_i = softmax_j(s_i),   o_i = Σ_j p_ij v_j
// Query head h reads key/value head h / (heads / kv_heads). Query i sits at cache slot
// q_offset + i; key slot j is allowed when j ≤ q_offset + i, key_mask[j] ≠ 0 and, with a
// window w > 0, q_offset + i − j < w; with segment ids (packed rows of several examples),
// also segment[j] = segment[q_offset + i]. A query with no allowed key gets o_i = 0.
// backward (probabilities saved by forward):
//   dv_j += Σ_i p_ij do_i,   dp_ij = do_i·v_j,   ds_ij = p_ij (dp_ij − Σ_l p_il dp_il)
//   dq_i = scale Σ_j ds_ij k_j,   dk_j += scale Σ_i ds_ij q_i
// Layouts (row-major): q, o, dq [batch, q_len, heads, D]; k, v, dk, dv
// [batch, kv_stride, kv_heads, D] of which slots [0, kv_len) are used; key_mask
// [batch, kv_stride] or null; probs [batch, heads, q_len, kv_len].

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "forge/backend/backend.hpp"
#include "forge/backend/detail/vec.hpp"

namespace forge::backend {

/// The extents and options of one attention call.
struct attention_shape {
  std::int64_t batch = 1, q_len = 1, kv_len = 1, kv_stride = 1;
  std::int64_t heads = 1, kv_heads = 1, head_dim = 1;
  std::int64_t q_offset = 0;  ///< cache slot of query 0
  std::int64_t window = 0;    ///< sliding window in slots, 0 = none
  double scale = 1.0;         ///< usually 1/sqrt(head_dim)
  /// [batch, kv_stride] segment id of each slot, or null: a packed row holds several
  /// examples and attention stays inside each one (a block-diagonal causal mask).
  const std::int32_t* segments = nullptr;
  bool allowed(const unsigned char* key_mask, std::int64_t b, std::int64_t i,
               std::int64_t j) const {
    const std::int64_t qi = q_offset + i;
    return j <= qi && (!key_mask || key_mask[b * kv_stride + j]) &&
           (window <= 0 || qi - j < window) &&
           (!segments || segments[b * kv_stride + j] == segments[b * kv_stride + qi]);
  }
};

namespace detail {
// Softmax over allowed entries of one row of scores; returns false if none is allowed.
template <class T>
bool masked_softmax(const attention_shape& a, const unsigned char* mask, std::int64_t b,
                    std::int64_t i, T* s) {
  T mx = -std::numeric_limits<T>::infinity();
  for (std::int64_t j = 0; j < a.kv_len; ++j)
    if (a.allowed(mask, b, i, j) && s[j] > mx) mx = s[j];
  if (mx == -std::numeric_limits<T>::infinity()) {
    for (std::int64_t j = 0; j < a.kv_len; ++j) s[j] = 0;
    return false;
  }
  T sum = 0;
  for (std::int64_t j = 0; j < a.kv_len; ++j) {
    s[j] = a.allowed(mask, b, i, j) ? std::exp(s[j] - mx) : T(0);
    sum += s[j];
  }
  for (std::int64_t j = 0; j < a.kv_len; ++j) s[j] /= sum;
  return true;
}
}  // namespace detail

/// Attention forward, scalar reference. `probs` may be null (inference).
template <class T>
void attention_forward(scalar, const attention_shape& a, const T* q, const T* k, const T* v,
                       const unsigned char* key_mask, T* out, T* probs) {
  const std::int64_t D = a.head_dim, G = a.heads / a.kv_heads;
  std::vector<T> s(static_cast<std::size_t>(a.kv_len));
  for (std::int64_t b = 0; b < a.batch; ++b)
    for (std::int64_t h = 0; h < a.heads; ++h)
      for (std::int64_t i = 0; i < a.q_len; ++i) {
        const T* qi = q + ((b * a.q_len + i) * a.heads + h) * D;
        for (std::int64_t j = 0; j < a.kv_len; ++j) {
          const T* kj = k + ((b * a.kv_stride + j) * a.kv_heads + h / G) * D;
          T d = 0;
          for (std::int64_t e = 0; e < D; ++e) d += qi[e] * kj[e];
          s[j] = d * T(a.scale);
        }
        detail::masked_softmax(a, key_mask, b, i, s.data());
        T* oi = out + ((b * a.q_len + i) * a.heads + h) * D;
        for (std::int64_t e = 0; e < D; ++e) oi[e] = 0;
        for (std::int64_t j = 0; j < a.kv_len; ++j) {
          const T* vj = v + ((b * a.kv_stride + j) * a.kv_heads + h / G) * D;
          for (std::int64_t e = 0; e < D; ++e) oi[e] += s[j] * vj[e];
        }
        if (probs)
          for (std::int64_t j = 0; j < a.kv_len; ++j)
            probs[((b * a.heads + h) * a.q_len + i) * a.kv_len + j] = s[j];
      }
}

/// Attention backward, scalar reference: dq overwritten, dk and dv overwritten
/// (slots [0, kv_len)).
template <class T>
void attention_backward(scalar, const attention_shape& a, const T* q, const T* k, const T* v,
                        const T* probs, const T* dout, T* dq, T* dk, T* dv) {
  const std::int64_t D = a.head_dim, G = a.heads / a.kv_heads;
  for (std::int64_t b = 0; b < a.batch; ++b)
    for (std::int64_t j = 0; j < a.kv_len; ++j)
      for (std::int64_t e = 0; e < a.kv_heads * D; ++e) {
        dk[(b * a.kv_stride + j) * a.kv_heads * D + e] = 0;
        dv[(b * a.kv_stride + j) * a.kv_heads * D + e] = 0;
      }
  std::vector<T> dp(static_cast<std::size_t>(a.kv_len));
  for (std::int64_t b = 0; b < a.batch; ++b)
    for (std::int64_t h = 0; h < a.heads; ++h)
      for (std::int64_t i = 0; i < a.q_len; ++i) {
        const T* p = probs + ((b * a.heads + h) * a.q_len + i) * a.kv_len;
        const T* qi = q + ((b * a.q_len + i) * a.heads + h) * D;
        const T* doi = dout + ((b * a.q_len + i) * a.heads + h) * D;
        T* dqi = dq + ((b * a.q_len + i) * a.heads + h) * D;
        T sum = 0;
        for (std::int64_t j = 0; j < a.kv_len; ++j) {
          const T* vj = v + ((b * a.kv_stride + j) * a.kv_heads + h / G) * D;
          T d = 0;
          for (std::int64_t e = 0; e < D; ++e) d += doi[e] * vj[e];
          dp[j] = d;
          sum += p[j] * d;
        }
        for (std::int64_t e = 0; e < D; ++e) dqi[e] = 0;
        for (std::int64_t j = 0; j < a.kv_len; ++j) {
          const std::int64_t kv = ((b * a.kv_stride + j) * a.kv_heads + h / G) * D;
          const T ds = p[j] * (dp[j] - sum) * T(a.scale);
          for (std::int64_t e = 0; e < D; ++e) {
            dqi[e] += ds * k[kv + e];
            dk[kv + e] += ds * qi[e];
            dv[kv + e] += p[j] * doi[e];
          }
        }
      }
}

// xsimd's AVX-512 max/exp trip GCC 12's -Wmaybe-uninitialized inside the intrinsics headers
// (a false positive on masked intrinsics with an undefined pass-through operand; see vec.hpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace detail {
// Prefill helpers. s[j] = scale · q·k_j for every key batch that meets [j0, j1), from the
// head's keys transposed (kt: D rows of `ld` keys, zero past the last key): each key batch is
// D FMAs of a broadcast q element with a vector of keys, four batches at a time, no
// horizontal sums. Writes s over whole batches; the caller clears what lies outside.
template <class Arch, class T>
void scores_from_transposed(const T* q, const T* kt, std::int64_t ld, std::int64_t D,
                            std::int64_t j0, std::int64_t j1, T scale, T* s) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  const batch vs(scale);
  std::int64_t j = j0 / W * W;
  const std::int64_t j1_up = (j1 + W - 1) / W * W;  // <= ld: ld is a multiple of W >= j1
  for (; j + 4 * W <= j1_up; j += 4 * W) {
    batch a0(T(0)), a1(T(0)), a2(T(0)), a3(T(0));
    for (std::int64_t e = 0; e < D; ++e) {
      const batch qe(q[e]);
      const T* r = kt + e * ld + j;
      a0 = xsimd::fma(qe, batch::load_unaligned(r), a0);
      a1 = xsimd::fma(qe, batch::load_unaligned(r + W), a1);
      a2 = xsimd::fma(qe, batch::load_unaligned(r + 2 * W), a2);
      a3 = xsimd::fma(qe, batch::load_unaligned(r + 3 * W), a3);
    }
    (a0 * vs).store_unaligned(s + j);
    (a1 * vs).store_unaligned(s + j + W);
    (a2 * vs).store_unaligned(s + j + 2 * W);
    (a3 * vs).store_unaligned(s + j + 3 * W);
  }
  for (; j < j1; j += W) {
    batch a(T(0));
    for (std::int64_t e = 0; e < D; ++e)
      a = xsimd::fma(batch(q[e]), batch::load_unaligned(kt + e * ld + j), a);
    (a * vs).store_unaligned(s + j);
  }
}

// Softmax over keys [j0, j1) of one score row whose other entries are zero, keys with a zero
// key_mask byte excluded (key_mask may be null): the simd form of masked_softmax for rows
// whose allowed keys are a range (no packed segments). Returns false if no key is allowed.
template <class Arch, class T>
bool softmax_range(T* s, std::int64_t j0, std::int64_t j1, const unsigned char* key_mask) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  const T ninf = -std::numeric_limits<T>::infinity();
  if (key_mask)
    for (std::int64_t j = j0; j < j1; ++j)
      if (!key_mask[j]) s[j] = ninf;
  T mx = ninf;
  std::int64_t j = j0;
  if (j1 - j0 >= W) {
    batch m(ninf);
    for (; j + W <= j1; j += W) m = xsimd::max(m, batch::load_unaligned(s + j));
    alignas(64) T t[W];
    m.store_aligned(t);
    for (T e : t) mx = std::max(mx, e);
  }
  for (; j < j1; ++j) mx = std::max(mx, s[j]);
  if (mx == ninf) {
    for (j = j0; j < j1; ++j) s[j] = T(0);
    return false;
  }
  const batch vm(mx);
  batch acc(T(0));
  T sum = 0;
  for (j = j0; j + W <= j1; j += W) {
    const batch e = xsimd::exp(batch::load_unaligned(s + j) - vm);
    e.store_unaligned(s + j);
    acc += e;
  }
  for (; j < j1; ++j) sum += s[j] = std::exp(s[j] - mx);
  sum += xsimd::hadd(acc);
  const batch vs(sum);
  for (j = j0; j + W <= j1; j += W) (batch::load_unaligned(s + j) / vs).store_unaligned(s + j);
  for (; j < j1; ++j) s[j] /= sum;
  return true;
}

// o = Σ_{j in [j0, j1), p_j ≠ 0} p_j v_j with the NV vectors of o held in registers (the
// per-key axpy would load and store o for every key).
template <class Arch, class T, int NV>
void weighted_values(const T* p, const T* v, std::int64_t stride, std::int64_t j0, std::int64_t j1,
                     T* o) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  batch acc[NV];
  for (int u = 0; u < NV; ++u) acc[u] = batch(T(0));
  for (std::int64_t j = j0; j < j1; ++j) {
    if (p[j] == T(0)) continue;
    const batch pj(p[j]);
    const T* vj = v + j * stride;
    for (int u = 0; u < NV; ++u) acc[u] = xsimd::fma(pj, batch::load_unaligned(vj + u * W), acc[u]);
  }
  for (int u = 0; u < NV; ++u) acc[u].store_unaligned(o + u * W);
}

// The same for QB queries at once (prefill): every key vector loaded feeds QB FMAs, so the
// transposed keys (D x ld, beyond L1 for long prompts) are read once per QB queries.
template <class Arch, int QB, class T>
void scores_from_transposed_block(const T* const* q, const T* kt, std::int64_t ld, std::int64_t D,
                                  std::int64_t j0, std::int64_t j1, T scale, T* const* s) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  const batch vs(scale);
  std::int64_t j = j0 / W * W;
  const std::int64_t j1_up = (j1 + W - 1) / W * W;
  for (; j + 4 * W <= j1_up; j += 4 * W) {
    batch acc[QB][4];
    for (int u = 0; u < QB; ++u) acc[u][0] = acc[u][1] = acc[u][2] = acc[u][3] = batch(T(0));
    for (std::int64_t e = 0; e < D; ++e) {
      const T* r = kt + e * ld + j;
      const batch k0 = batch::load_unaligned(r), k1 = batch::load_unaligned(r + W);
      const batch k2 = batch::load_unaligned(r + 2 * W), k3 = batch::load_unaligned(r + 3 * W);
      for (int u = 0; u < QB; ++u) {
        const batch qe(q[u][e]);
        acc[u][0] = xsimd::fma(qe, k0, acc[u][0]);
        acc[u][1] = xsimd::fma(qe, k1, acc[u][1]);
        acc[u][2] = xsimd::fma(qe, k2, acc[u][2]);
        acc[u][3] = xsimd::fma(qe, k3, acc[u][3]);
      }
    }
    for (int u = 0; u < QB; ++u)
      for (int t = 0; t < 4; ++t) (acc[u][t] * vs).store_unaligned(s[u] + j + t * W);
  }
  for (; j < j1; j += W) {
    batch acc[QB];
    for (int u = 0; u < QB; ++u) acc[u] = batch(T(0));
    for (std::int64_t e = 0; e < D; ++e) {
      const batch kv = batch::load_unaligned(kt + e * ld + j);
      for (int u = 0; u < QB; ++u) acc[u] = xsimd::fma(batch(q[u][e]), kv, acc[u]);
    }
    for (int u = 0; u < QB; ++u) (acc[u] * vs).store_unaligned(s[u] + j);
  }
}

// o_u = Σ_{j in [j0, j1)} p_u[j] v_j for QB queries, each value row loaded once (p_u is zero
// outside query u's own keys, so the shared range adds nothing to it).
template <class Arch, class T, int NV, int QB>
void weighted_values_block(const T* const* p, const T* v, std::int64_t stride, std::int64_t j0,
                           std::int64_t j1, T* const* o) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  batch acc[QB][NV];
  for (int u = 0; u < QB; ++u)
    for (int t = 0; t < NV; ++t) acc[u][t] = batch(T(0));
  for (std::int64_t j = j0; j < j1; ++j) {
    const T* vj = v + j * stride;
    batch vv[NV];
    for (int t = 0; t < NV; ++t) vv[t] = batch::load_unaligned(vj + t * W);
    for (int u = 0; u < QB; ++u) {
      if (p[u][j] == T(0)) continue;
      const batch pj(p[u][j]);
      for (int t = 0; t < NV; ++t) acc[u][t] = xsimd::fma(pj, vv[t], acc[u][t]);
    }
  }
  for (int u = 0; u < QB; ++u)
    for (int t = 0; t < NV; ++t) acc[u][t].store_unaligned(o[u] + t * W);
}
}  // namespace detail

#pragma GCC diagnostic pop

/// Attention forward with xsimd; OpenMP across (batch, head). Single queries (decode) take
/// per-key dot products; longer query blocks (prefill) transpose the head's keys once and
/// compute each query's scores as key-vector FMAs, and sum the values in registers.
template <class T, class Arch>
void attention_forward(simd<Arch>, const attention_shape& a, const T* q, const T* k, const T* v,
                       const unsigned char* key_mask, T* out, T* probs) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  const std::int64_t D = a.head_dim, G = a.heads / a.kv_heads;
  const std::int64_t BH = a.batch * a.heads;
  const bool blocked = a.q_len >= 4;
  const std::int64_t kv_used = std::min(a.kv_len, a.q_offset + a.q_len);  // causal limit
  const std::int64_t ld = (kv_used + 4 * W - 1) / (4 * W) * (4 * W);
#pragma omp parallel if (BH * a.q_len * a.kv_len * D > (1 << 16))
  {
    constexpr int QB = 4;  // queries per block in the prefill path
    const auto row = static_cast<std::size_t>(std::max(a.kv_len, ld));
    std::vector<T> s(row), sb(blocked ? QB * row : 0);
    std::vector<T> kt(blocked ? static_cast<std::size_t>(D * ld) : 0);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t bh = 0; bh < BH; ++bh) {
      const std::int64_t b = bh / a.heads, h = bh % a.heads;
      const T* kh = k + (b * a.kv_stride * a.kv_heads + h / G) * D;  // key j at kh + j·kvs
      const T* vh = v + (b * a.kv_stride * a.kv_heads + h / G) * D;
      const std::int64_t kvs = a.kv_heads * D;
      if (blocked) {
        for (std::int64_t e = 0; e < D; ++e) {
          T* r = kt.data() + e * ld;
          for (std::int64_t j = 0; j < kv_used; ++j) r[j] = kh[j * kvs + e];
          for (std::int64_t j = kv_used; j < ld; ++j) r[j] = T(0);
        }
      }
      std::int64_t i0 = 0;
      if (blocked && D == 4 * W) {
        // QB queries at a time: shared loads of the transposed keys and of the values.
        for (; i0 + QB <= a.q_len; i0 += QB) {
          const T* qs[QB];
          T* ss[QB];
          T* os[QB];
          std::int64_t lo[QB], hi[QB];
          for (int u = 0; u < QB; ++u) {
            const std::int64_t i = i0 + u;
            qs[u] = q + ((b * a.q_len + i) * a.heads + h) * D;
            ss[u] = sb.data() + std::size_t(u) * row;
            os[u] = out + ((b * a.q_len + i) * a.heads + h) * D;
            hi[u] = std::min(a.kv_len, a.q_offset + i + 1);
            lo[u] = a.window > 0 ? std::max<std::int64_t>(0, a.q_offset + i - a.window + 1) : 0;
          }
          const std::int64_t J0 = lo[0], J1 = hi[QB - 1];  // both grow with the query index
          detail::scores_from_transposed_block<Arch, QB>(qs, kt.data(), ld, D, J0, J1, T(a.scale),
                                                         ss);
          for (int u = 0; u < QB; ++u) {
            T* su = ss[u];
            for (std::int64_t j = 0; j < lo[u]; ++j) su[j] = T(0);
            for (std::int64_t j = hi[u]; j < a.kv_len; ++j) su[j] = T(0);
            if (a.segments)
              detail::masked_softmax(a, key_mask, b, i0 + u, su);
            else
              detail::softmax_range<Arch>(su, lo[u], hi[u],
                                          key_mask ? key_mask + b * a.kv_stride : nullptr);
          }
          detail::weighted_values_block<Arch, T, 4, QB>(ss, vh, kvs, J0, J1, os);
          if (probs)
            for (int u = 0; u < QB; ++u)
              std::copy(ss[u], ss[u] + a.kv_len,
                        probs + ((b * a.heads + h) * a.q_len + i0 + u) * a.kv_len);
        }
      }
      for (std::int64_t i = i0; i < a.q_len; ++i) {
        const T* qi = q + ((b * a.q_len + i) * a.heads + h) * D;
        // Keys past the causal limit are never allowed: skip their dot products.
        const std::int64_t jmax = std::min(a.kv_len, a.q_offset + i + 1);
        const std::int64_t jmin =
            a.window > 0 ? std::max<std::int64_t>(0, a.q_offset + i - a.window + 1) : 0;
        if (blocked) {
          detail::scores_from_transposed<Arch>(qi, kt.data(), ld, D, jmin, jmax, T(a.scale),
                                               s.data());
          for (std::int64_t j = 0; j < jmin; ++j) s[j] = T(0);
          for (std::int64_t j = jmax; j < a.kv_len; ++j) s[j] = T(0);
        } else {
          for (std::int64_t j = 0; j < a.kv_len; ++j)
            s[j] =
                j >= jmin && j < jmax ? detail::dot<Arch>(qi, kh + j * kvs, D) * T(a.scale) : T(0);
        }
        if (a.segments)
          detail::masked_softmax(a, key_mask, b, i, s.data());
        else
          detail::softmax_range<Arch>(s.data(), jmin, jmax,
                                      key_mask ? key_mask + b * a.kv_stride : nullptr);
        T* oi = out + ((b * a.q_len + i) * a.heads + h) * D;
        if (D == 4 * W) {
          detail::weighted_values<Arch, T, 4>(s.data(), vh, kvs, jmin, jmax, oi);
        } else if (D == 8 * W) {
          detail::weighted_values<Arch, T, 8>(s.data(), vh, kvs, jmin, jmax, oi);
        } else {
          for (std::int64_t e = 0; e < D; ++e) oi[e] = 0;
          for (std::int64_t j = jmin; j < jmax; ++j)
            if (s[j] != T(0)) detail::axpy<Arch>(s[j], vh + j * kvs, oi, D);
        }
        if (probs)
          std::copy(s.begin(), s.begin() + a.kv_len,
                    probs + ((b * a.heads + h) * a.q_len + i) * a.kv_len);
      }
    }
  }
}

/// Attention backward with xsimd; OpenMP across (batch, kv head) so dk/dv have one writer.
template <class T, class Arch>
void attention_backward(simd<Arch>, const attention_shape& a, const T* q, const T* k, const T* v,
                        const T* probs, const T* dout, T* dq, T* dk, T* dv) {
  const std::int64_t D = a.head_dim, G = a.heads / a.kv_heads;
  const std::int64_t BK = a.batch * a.kv_heads;
#pragma omp parallel if (a.batch * a.heads * a.q_len * a.kv_len * D > (1 << 16))
  {
    std::vector<T> dp(static_cast<std::size_t>(a.kv_len));
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t bk = 0; bk < BK; ++bk) {
      const std::int64_t b = bk / a.kv_heads, kh = bk % a.kv_heads;
      for (std::int64_t j = 0; j < a.kv_len; ++j) {
        const std::int64_t kv = ((b * a.kv_stride + j) * a.kv_heads + kh) * D;
        for (std::int64_t e = 0; e < D; ++e) dk[kv + e] = dv[kv + e] = 0;
      }
      for (std::int64_t h = kh * G; h < (kh + 1) * G; ++h)
        for (std::int64_t i = 0; i < a.q_len; ++i) {
          const T* p = probs + ((b * a.heads + h) * a.q_len + i) * a.kv_len;
          const T* qi = q + ((b * a.q_len + i) * a.heads + h) * D;
          const T* doi = dout + ((b * a.q_len + i) * a.heads + h) * D;
          T* dqi = dq + ((b * a.q_len + i) * a.heads + h) * D;
          const std::int64_t jmax = std::min(a.kv_len, a.q_offset + i + 1);
          T sum = 0;
          for (std::int64_t j = 0; j < jmax; ++j) {
            dp[j] = p[j] != T(0) ? detail::dot<Arch>(
                                       doi, v + ((b * a.kv_stride + j) * a.kv_heads + kh) * D, D)
                                 : T(0);
            sum += p[j] * dp[j];
          }
          for (std::int64_t e = 0; e < D; ++e) dqi[e] = 0;
          for (std::int64_t j = 0; j < jmax; ++j) {
            if (p[j] == T(0)) continue;
            const std::int64_t kv = ((b * a.kv_stride + j) * a.kv_heads + kh) * D;
            const T ds = p[j] * (dp[j] - sum) * T(a.scale);
            detail::axpy<Arch>(ds, k + kv, dqi, D);
            detail::axpy<Arch>(ds, qi, dk + kv, D);
            detail::axpy<Arch>(p[j], doi, dv + kv, D);
          }
        }
    }
  }
}

}  // namespace forge::backend
