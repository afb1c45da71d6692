// GenerationService's unary RPCs besides Generate: Tokenize and Detokenize
// run on the call queue (a prompt of kMaxPromptBytes takes a while to
// tokenize; a gRPC reactor thread must not), GetModelInfo inline.
#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/server/generation_service.h"
#include "lcd/server/request_validation.h"
#include "lcd/server/status_mapping.h"
#include "src/generation_util.h"

namespace lcd::server {
namespace {

constexpr int kMaxDetokenizeIds = 1 << 18;

absl::Status DoTokenize(ModelRegistry* registry, const lcd::v1::TokenizeRequest& r,
                        lcd::v1::TokenizeResponse* out) {
  if (r.model().empty()) return absl::InvalidArgumentError("model: must name a loaded model");
  LCD_RETURN_IF_ERROR(ValidateModelName(r.model(), "model"));
  LCD_RETURN_IF_ERROR(ValidatePromptBytes(r.text(), "text"));
  LCD_ASSIGN_OR_RETURN(auto model, registry->Get(r.model()));
  LCD_ASSIGN_OR_RETURN(std::vector<int32_t> ids, model->tokenizer->Encode(r.text(), r.add_bos()));
  for (int32_t id : ids) {
    out->add_token_ids(id);
    out->add_tokens(SanitizeUtf8(model->tokenizer->TokenBytes(id, /*skip_special=*/false)));
  }
  return absl::OkStatus();
}

absl::Status DoDetokenize(ModelRegistry* registry, const lcd::v1::DetokenizeRequest& r,
                          lcd::v1::DetokenizeResponse* out) {
  if (r.model().empty()) return absl::InvalidArgumentError("model: must name a loaded model");
  LCD_RETURN_IF_ERROR(ValidateModelName(r.model(), "model"));
  if (r.token_ids_size() > kMaxDetokenizeIds) {
    return absl::InvalidArgumentError(absl::StrCat("token_ids: more than ", kMaxDetokenizeIds));
  }
  LCD_ASSIGN_OR_RETURN(auto model, registry->Get(r.model()));
  std::vector<int32_t> ids(r.token_ids().begin(), r.token_ids().end());
  LCD_RETURN_IF_ERROR(ValidateTokenIds(ids, model->tokenizer->vocab_size(), "token_ids"));
  out->set_text(SanitizeUtf8(model->tokenizer->Decode(ids, r.skip_special_tokens())));
  return absl::OkStatus();
}

absl::Status DoGetModelInfo(ModelRegistry* registry, const lcd::v1::GetModelInfoRequest& r,
                            lcd::v1::ModelInfo* out) {
  if (r.model().empty()) return absl::InvalidArgumentError("model: must name a loaded model");
  LCD_RETURN_IF_ERROR(ValidateModelName(r.model(), "model"));
  LCD_ASSIGN_OR_RETURN(auto model, registry->Get(r.model()));
  const runtime::ModelConfig& c = model->model->config();
  out->set_name(model->name);
  out->set_version(model->version);
  out->set_architecture(std::string(runtime::ArchitectureName(c.arch)));
  out->set_vocab_size(c.vocab_size);
  out->set_hidden_size(c.hidden_size);
  out->set_num_layers(c.num_layers);
  out->set_num_heads(c.num_heads);
  out->set_num_kv_heads(c.num_kv_heads);
  out->set_max_context(model->max_context);
  for (int32_t id : c.eos_token_ids) out->add_eos_token_ids(id);
  if (auto bos = model->tokenizer->bos_id(); bos.has_value()) out->set_bos_token_id(*bos);
  return absl::OkStatus();
}

}  // namespace

grpc::ServerUnaryReactor* GenerationServiceImpl::Tokenize(grpc::CallbackServerContext* ctx,
                                                          const lcd::v1::TokenizeRequest* request,
                                                          lcd::v1::TokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  if (!calls().Post([this, reactor, request, response] {
        reactor->Finish(ToGrpcStatus(DoTokenize(registry_, *request, response)));
      })) {
    reactor->Finish(ToGrpcStatus(absl::UnavailableError("the server is shutting down")));
  }
  return reactor;
}

grpc::ServerUnaryReactor* GenerationServiceImpl::Detokenize(
    grpc::CallbackServerContext* ctx, const lcd::v1::DetokenizeRequest* request,
    lcd::v1::DetokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  if (!calls().Post([this, reactor, request, response] {
        reactor->Finish(ToGrpcStatus(DoDetokenize(registry_, *request, response)));
      })) {
    reactor->Finish(ToGrpcStatus(absl::UnavailableError("the server is shutting down")));
  }
  return reactor;
}

grpc::ServerUnaryReactor* GenerationServiceImpl::GetModelInfo(
    grpc::CallbackServerContext* ctx, const lcd::v1::GetModelInfoRequest* request,
    lcd::v1::ModelInfo* response) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(DoGetModelInfo(registry_, *request, response)));
  return reactor;
}

}  // namespace lcd::server
