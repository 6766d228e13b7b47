# One role per function, each with only what its role does.

locals {
  assume_services = toset([
    "lambda.amazonaws.com", "scheduler.amazonaws.com", "vpc-flow-logs.amazonaws.com",
  ])
}

data "aws_iam_policy_document" "assume" {
  for_each = local.assume_services
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = [each.key]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "fn" {
  for_each           = local.roles
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume["lambda.amazonaws.com"].json
}

resource "aws_iam_role_policy" "fn" {
  for_each = local.roles
  name     = "remarketable-${each.key}"
  role     = aws_iam_role.fn[each.key].id
  policy   = data.aws_iam_policy_document.fn[each.key].json
}

# In the VPC, Lambda manages the functions' network interfaces with the function's role.
resource "aws_iam_role_policy_attachment" "vpc" {
  for_each   = local.lambda_in ? local.roles : toset([])
  role       = aws_iam_role.fn[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

data "aws_iam_policy_document" "fn" {
  for_each = local.roles

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.fn[each.key].arn}:*"]
  }

  statement {
    sid       = "Traces"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }

  statement {
    sid       = "ReadSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.database_url.arn, aws_secretsmanager_secret.share_token.arn]
  }

  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }

  dynamic "statement" {
    for_each = each.key == "ingest" && local.kinesis ? [1] : []
    content {
      sid = "ReadStream"
      actions = [
        "kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
        "kinesis:GetShardIterator", "kinesis:ListShards", "kinesis:SubscribeToShard",
      ]
      resources = [aws_kinesis_stream.events[0].arn]
    }
  }

  dynamic "statement" {
    for_each = each.key == "ingest" && local.kinesis ? [1] : []
    content {
      sid       = "ListStreams"
      actions   = ["kinesis:ListStreams"]
      resources = ["arn:${local.partition}:kinesis:${local.region}:${local.account_id}:stream/*"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "http" && local.kinesis ? [1] : []
    content {
      sid       = "CollectPublishes"
      actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"]
      resources = [aws_kinesis_stream.events[0].arn]
    }
  }

  dynamic "statement" {
    for_each = each.key == "ingest" && local.msk ? [1] : []
    content {
      sid = "ReadCluster"
      actions = [
        "kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers", "kafka-cluster:Connect",
        "kafka-cluster:DescribeClusterDynamicConfiguration",
      ]
      resources = [aws_msk_serverless_cluster.events[0].arn]
    }
  }

  dynamic "statement" {
    for_each = each.key == "ingest" && local.msk ? [1] : []
    content {
      sid     = "ReadTopic"
      actions = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData", "kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
      resources = [
        "arn:${local.partition}:kafka:${local.region}:${local.account_id}:topic/${aws_msk_serverless_cluster.events[0].cluster_name}/*/${var.topic}",
        "arn:${local.partition}:kafka:${local.region}:${local.account_id}:group/${aws_msk_serverless_cluster.events[0].cluster_name}/*/${var.kafka_consumer_group}",
      ]
    }
  }

  dynamic "statement" {
    for_each = each.key == "ingest" && local.kafka ? [1] : []
    content {
      sid       = "KafkaCredentials"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [var.kafka_secret_arn]
    }
  }
}

# The mapping's pollers for MSK open network interfaces in the cluster's subnets with the
# function's role.
resource "aws_iam_role_policy_attachment" "msk_network" {
  count      = local.msk && !local.lambda_in ? 1 : 0
  role       = aws_iam_role.fn["ingest"].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}
