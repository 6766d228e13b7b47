# The HTTP API, the dashboard and collect: a Function URL and/or an HTTP API ($default stage,
# so no stage name is prepended to paths). Both are open at the edge on purpose: the API checks
# its own bearer credentials (API keys, share tokens, write keys) per tenant, and the dashboard
# and collect must be reachable from browsers.

resource "aws_lambda_function_url" "http" {
  #checkov:skip=CKV_AWS_258:the API checks its own per-tenant bearer credentials; browsers load the dashboard and post to collect without AWS signatures
  count              = var.function_url ? 1 : 0
  function_name      = aws_lambda_function.fn["http"].function_name
  authorization_type = "NONE"
  invoke_mode        = "BUFFERED"
}

# With auth NONE, anyone may call the URL: the function's resource policy must say so (the
# console adds this statement by itself, the API does not).
resource "aws_lambda_permission" "function_url" {
  #checkov:skip=CKV_AWS_301:the public Function URL is the API's front door (see CKV_AWS_258); only InvokeFunctionUrl with auth NONE is granted, not InvokeFunction
  count                  = var.function_url ? 1 : 0
  statement_id           = "function-url-public"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.fn["http"].function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_apigatewayv2_api" "http" {
  count         = var.http_api ? 1 : 0
  name          = var.name
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "http" {
  count                  = var.http_api ? 1 : 0
  api_id                 = aws_apigatewayv2_api.http[0].id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.fn["http"].invoke_arn
  payload_format_version = "2.0"
}

resource "aws_apigatewayv2_route" "http" {
  count              = var.http_api ? 1 : 0
  api_id             = aws_apigatewayv2_api.http[0].id
  route_key          = "$default"
  target             = "integrations/${aws_apigatewayv2_integration.http[0].id}"
  authorization_type = "NONE"
}

resource "aws_cloudwatch_log_group" "http_api" {
  count             = var.http_api ? 1 : 0
  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_apigatewayv2_stage" "http" {
  count       = var.http_api ? 1 : 0
  api_id      = aws_apigatewayv2_api.http[0].id
  name        = "$default"
  auto_deploy = true

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.http_api[0].arn
    # The path only: query strings may carry write keys or share tokens.
    format = jsonencode({
      requestId = "$context.requestId"
      time      = "$context.requestTime"
      method    = "$context.httpMethod"
      path      = "$context.path"
      status    = "$context.status"
      latencyMs = "$context.responseLatency"
    })
  }
}

resource "aws_lambda_permission" "http_api" {
  count         = var.http_api ? 1 : 0
  statement_id  = "http-api"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn["http"].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.http[0].execution_arn}/*"
}
