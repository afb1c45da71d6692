#include "lcd/server/health.h"

#include <string_view>
#include <utility>

#include "lcd/base/logging.h"
#include "lcd/v1/generate.grpc.pb.h"

namespace lcd::server {

static_assert(std::string_view(kReadinessService) ==
                  std::string_view(lcd::v1::GenerationService::service_full_name()),
              "the readiness health name is the GenerationService's full name");

HealthReporter::HealthReporter(grpc::HealthCheckServiceInterface* service,
                               std::function<bool()> ready)
    : service_(service), ready_(std::move(ready)) {
  if (service_ == nullptr) return;
  // The default service already reports "" SERVING; say so explicitly, and
  // start readiness at NOT_SERVING (it is NOT_FOUND until first set).
  service_->SetServingStatus(kLivenessService, true);
  service_->SetServingStatus(kReadinessService, false);
}

void HealthReporter::SetModel(const std::string& name, bool serving) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || service_ == nullptr) return;
    if (name == kLivenessService || name == kReadinessService) {
      // A model may not take over a probe's entry (names are otherwise free).
      LCD_LOG(WARNING) << "health: no per-model entry for model '" << name
                       << "' (the name is a probe's)";
    } else {
      service_->SetServingStatus(name, serving);
    }
  }
  Refresh();
}

void HealthReporter::Refresh() {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || service_ == nullptr) return;
  }
  // ready_() takes the registry's lock; evaluate it outside ours.
  const bool ready = ready_ ? ready_() : true;
  absl::MutexLock lock(&mu_);
  if (shut_down_ || service_ == nullptr) return;
  service_->SetServingStatus(kReadinessService, ready);
}

void HealthReporter::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (shut_down_ || service_ == nullptr) return;
  shut_down_ = true;
  service_->SetServingStatus(false);  // Every entry, "" included.
  service_->Shutdown();
  LCD_LOG(INFO) << "health: NOT_SERVING";
}

}  // namespace lcd::server
