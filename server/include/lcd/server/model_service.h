// lcd.v1.ModelService on the gRPC callback API. ListModels and
// GetModelStatus answer inline from the registry; LoadModel and UnloadModel
// take seconds, so they run on registry worker threads and finish the call
// from there (no gRPC thread waits on a load).
//
// Thread safety: shared by all calls; holds no per-call state.
#ifndef LCD_SERVER_MODEL_SERVICE_H_
#define LCD_SERVER_MODEL_SERVICE_H_

#include "absl/time/time.h"
#include "lcd/server/model_registry.h"
#include "lcd/v1/model.grpc.pb.h"

namespace lcd::server {

class ModelServiceImpl final : public lcd::v1::ModelService::CallbackService {
 public:
  // `registry` is not owned. `drain` bounds how long an old or unloaded
  // version may finish its requests.
  ModelServiceImpl(ModelRegistry* registry, absl::Duration drain)
      : registry_(registry), drain_(drain) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const lcd::v1::ListModelsRequest* request,
                                       lcd::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* ctx,
                                      const lcd::v1::LoadModelRequest* request,
                                      lcd::v1::ModelStatus* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* ctx,
                                        const lcd::v1::UnloadModelRequest* request,
                                        lcd::v1::ModelStatus* response) override;
  grpc::ServerUnaryReactor* GetModelStatus(grpc::CallbackServerContext* ctx,
                                           const lcd::v1::GetModelStatusRequest* request,
                                           lcd::v1::ModelStatus* response) override;

 private:
  ModelRegistry* const registry_;
  const absl::Duration drain_;
};

// ModelStatusInfo -> proto (exposed for tests).
void ToProto(const ModelStatusInfo& info, lcd::v1::ModelStatus* out);

}  // namespace lcd::server

#endif  // LCD_SERVER_MODEL_SERVICE_H_
