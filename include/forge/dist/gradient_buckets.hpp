#pragma once
// Gradient reduction in buckets, overlapped with the backward pass (data parallelism).
//
// Backward runs the layers in reverse, so the gradients of the head and of the last layers
// are final long before backward reaches layer 0. The trainable tensors are grouped into
// buckets in that order (head and final norm, layer L−1, …, layer 0 and the embeddings), and
// a bucket's rank-ordered sum is started (communicator::start_all_reduce_sum) as soon as
// backward has left every layer it holds, while backward goes on with the layers below.
//
// How backward says where it is: for the duration of the call, a probe (a linear adapter
// that adds nothing and trains nothing) sits first among the adapters of each layer's
// down_proj, the first projection backward visits in a layer; when backward reaches layer
// j's probe, everything above layer j is final. The probes are removed before the call
// returns, also when it throws.
//
// The sums are the communicator's rank-ordered sums of the same values as without overlap,
// element by element, so the result has the same bits; only the time at which each bucket
// travels changes. Which layer a tensor belongs to is read from its name
// ("model.layers.<i>.", "lm_head", "model.norm."); a tensor named otherwise is reduced after
// backward, which is correct, only not overlapped.

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "forge/dist/communicator.hpp"
#include "forge/model/forward.hpp"
#include "forge/train/parameters.hpp"

namespace forge::dist {

/// How a trainer reduces gradients over its communicator.
struct reduce_options {
  bool overlap = true;                    ///< start buckets while backward runs
  std::size_t bucket_elements = 1 << 18;  ///< bucket size in gradient values (1 MiB of f32)
};

/// What the reductions of a run cost.
struct reduce_stats {
  std::int64_t buckets = 0;        ///< buckets reduced
  std::int64_t buckets_early = 0;  ///< of which started before backward had finished
  double wait_seconds = 0;         ///< time blocked on gradient sums after backward
};

namespace detail {

/// A linear adapter that adds nothing and reports when backward reaches it.
template <class T>
class backward_probe final : public model::linear_adapter<T> {
 public:
  explicit backward_probe(std::function<void()> reached) : reached_(std::move(reached)) {}
  void forward(const T*, std::int64_t, T*) override {}
  void backward(const T*, const T*, std::int64_t, T*) override { reached_(); }

 private:
  std::function<void()> reached_;
};

/// The backward event after which tensor `name` is final in a model of L layers: event k
/// (0 ≤ k < L) is backward reaching layer L−1−k's probe, event L its return.
inline std::size_t ready_event(const std::string& name, std::size_t L) {
  if (name.find("lm_head") != std::string::npos || name.rfind("model.norm.", 0) == 0) return 0;
  const auto at = name.find("model.layers.");
  if (at == std::string::npos) return L;
  char* end = nullptr;
  const auto li = std::strtoull(name.c_str() + at + 13, &end, 10);
  if (end == name.c_str() + at + 13 || *end != '.' || li >= L || li == 0) return L;
  return L - li;  // final once backward reaches layer li − 1
}

}  // namespace detail

/// The buckets of one list of trainable tensors of one model, reduced over `comm`.
template <class T>
class gradient_buckets {
 public:
  gradient_buckets(communicator& comm, model::causal_lm<T>& m,
                   const std::vector<train::trainable<T>>& ps, reduce_options o = {})
      : comm_(comm), m_(m), ps_(ps), o_(o) {
    require(o.bucket_elements > 0,
            {.what = "bucket size must be positive", .place = "reduce_options.bucket_elements"});
    const std::size_t L = m.layers.size();
    // Tensors in the order they become final; consecutive ones fill a bucket.
    std::vector<std::vector<std::size_t>> by_event(L + 1);
    for (std::size_t k = 0; k < ps.size(); ++k)
      by_event[detail::ready_event(ps[k].name, L)].push_back(k);
    for (std::size_t e = 0; e <= L; ++e)
      for (auto k : by_event[e]) {
        if (buckets_.empty() || buckets_.back().elements >= o.bucket_elements)
          buckets_.push_back({});
        auto& b = buckets_.back();
        b.tensors.push_back(k);
        b.elements += ps[k].grad.size();
        b.event = e;  // the latest event of its tensors (events ascend here)
      }
  }

  /// Runs model::backward for this rank's last micro-batch and reduces: afterwards every
  /// tensor's grad holds the group's rank-ordered sum of (partial + this backward's
  /// gradient), where `partial` (one vector per tensor, or null) is this rank's sum over its
  /// earlier micro-batches. The gradients must be zero on entry (backward accumulates).
  template <class Bk>
  void backward_and_reduce(Bk be, model::workspace<T>& ws,
                           const std::vector<std::vector<T>>* partial) {
    partial_ = partial;
    next_ = 0;
    if (comm_.size() == 1 || !o_.overlap) {
      model::backward(be, m_, ws);
      finish();
      return;
    }
    const std::size_t L = m_.layers.size();
    struct installed {
      model::causal_lm<T>& m;
      ~installed() {
        for (auto& l : m.layers) {
          auto& a = l.down_proj.adapters;
          if (!a.empty() && dynamic_cast<detail::backward_probe<T>*>(a.front().get()))
            a.erase(a.begin());
        }
      }
    } guard{m_};
    for (std::size_t j = 0; j < L; ++j) {
      auto& a = m_.layers[j].down_proj.adapters;
      const std::size_t event = L - 1 - j;
      a.insert(a.begin(), std::make_shared<detail::backward_probe<T>>(
                              [this, event] { start_through(event); }));
    }
    model::backward(be, m_, ws);
    finish();
  }

  /// Reduces without a backward (the rank had no micro-batch with targets in this step):
  /// the group sum of `partial` (or of the current gradients when it is null).
  void reduce(const std::vector<std::vector<T>>* partial) {
    partial_ = partial;
    next_ = 0;
    finish();
  }

  /// Totals so far.
  const reduce_stats& stats() const { return stats_; }

 private:
  struct bucket {
    std::vector<std::size_t> tensors{};
    std::size_t elements = 0;
    std::size_t event = 0;
    std::vector<T> flat{};
    std::unique_ptr<pending> op{};
  };

  // Starts every bucket whose tensors are final by `event`, in bucket order (the same order
  // on every rank: buckets and events are functions of the model and the tensor names).
  void start_through(std::size_t event) {
    comm_.progress();
    for (; next_ < buckets_.size() && buckets_[next_].event <= event; ++next_) {
      start(buckets_[next_]);
      ++stats_.buckets_early;
    }
  }

  void start(bucket& b) {
    b.flat.resize(b.elements);
    std::size_t at = 0;
    for (auto k : b.tensors) {
      const auto g = ps_[k].grad;
      if (partial_)
        for (std::size_t i = 0; i < g.size(); ++i) b.flat[at + i] = (*partial_)[k][i] + g[i];
      else
        std::copy(g.begin(), g.end(), b.flat.begin() + std::ptrdiff_t(at));
      at += g.size();
    }
    b.op = comm_.start_all_reduce_sum(std::span<T>(b.flat));
    ++stats_.buckets;
  }

  // Starts the buckets not started yet, waits for all, and writes the sums to the gradients.
  void finish() {
    const auto t0 = std::chrono::steady_clock::now();
    for (; next_ < buckets_.size(); ++next_) start(buckets_[next_]);
    for (auto& b : buckets_) {
      b.op->wait();
      std::size_t at = 0;
      for (auto k : b.tensors) {
        const auto g = ps_[k].grad;
        std::copy_n(b.flat.begin() + std::ptrdiff_t(at), g.size(), g.begin());
        at += g.size();
      }
      b.op.reset();
    }
    stats_.wait_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  communicator& comm_;
  model::causal_lm<T>& m_;
  const std::vector<train::trainable<T>>& ps_;
  reduce_options o_;
  std::vector<bucket> buckets_;
  std::size_t next_ = 0;
  const std::vector<std::vector<T>>* partial_ = nullptr;
  reduce_stats stats_;
};

}  // namespace forge::dist
