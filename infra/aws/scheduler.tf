# rollup and maintenance on EventBridge Scheduler, with an explicit input (sent verbatim).

locals {
  schedules = {
    rollup      = var.rollup_schedule
    maintenance = var.maintenance_schedule
  }
}

resource "aws_scheduler_schedule" "job" {
  for_each                     = local.schedules
  name                         = "${var.name}-${each.key}"
  description                  = "ReMarketable ${each.key} job"
  schedule_expression          = each.value
  schedule_expression_timezone = "UTC"
  kms_key_arn                  = aws_kms_key.main.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.fn[each.key].arn
    role_arn = aws_iam_role.scheduler.arn
    input = jsonencode({
      job            = each.key
      scheduled_time = "<aws.scheduler.scheduled-time>"
      execution_id   = "<aws.scheduler.execution-id>"
    })

    retry_policy {
      maximum_retry_attempts       = 0
      maximum_event_age_in_seconds = 300
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.assume["scheduler.amazonaws.com"].json
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "invoke-jobs"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    actions   = ["lambda:InvokeFunction"]
    resources = [for job in keys(local.schedules) : aws_lambda_function.fn[job].arn]
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }
}
