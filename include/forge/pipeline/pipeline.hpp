#pragma once
// The typed Adapt -> Compress -> Align -> Deploy pipeline: stage kinds over method policies,
// representation tags, metrics and gates, composition rules checked by the compiler, and the
// runner that writes one report per stage. See docs/pipeline.md.

#include "forge/pipeline/compose.hpp"
#include "forge/pipeline/criterion.hpp"
#include "forge/pipeline/gate.hpp"
#include "forge/pipeline/method.hpp"
#include "forge/pipeline/metric.hpp"
#include "forge/pipeline/metrics.hpp"
#include "forge/pipeline/report.hpp"
#include "forge/pipeline/representation.hpp"
#include "forge/pipeline/rules.hpp"
#include "forge/pipeline/run.hpp"
#include "forge/pipeline/stage.hpp"
#include "forge/pipeline/stage_context.hpp"
#include "forge/pipeline/stage_kind.hpp"
#include "forge/pipeline/stage_result.hpp"
#include "forge/pipeline/traceable.hpp"
