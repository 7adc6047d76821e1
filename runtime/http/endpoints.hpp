// The endpoints of `parley serve` (each throws ApiError for a request it refuses).
#pragma once

#include "api.hpp"

namespace parley_http {

void handle_chat_completions(ServerState &state, const httplib::Request &req, httplib::Response &res);
void handle_completions(ServerState &state, const httplib::Request &req, httplib::Response &res);
void handle_translations(ServerState &state, const httplib::Request &req, httplib::Response &res);
void handle_models(ServerState &state, const httplib::Request &req, httplib::Response &res);
void handle_health(ServerState &state, const httplib::Request &req, httplib::Response &res);
void handle_metrics(ServerState &state, const httplib::Request &req, httplib::Response &res);

}  // namespace parley_http
