#include "lcd/server/health.h"

#include <utility>

#include "lcd/base/logging.h"

namespace lcd::server {

HealthReporter::HealthReporter(grpc::HealthCheckServiceInterface* service,
                               std::function<bool()> ready)
    : service_(service), ready_(std::move(ready)) {
  if (service_ != nullptr) service_->SetServingStatus("", false);
}

void HealthReporter::SetModel(const std::string& name, bool serving) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || service_ == nullptr) return;
    service_->SetServingStatus(name, serving);
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
  service_->SetServingStatus("", ready);
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
