# The stream: a Kinesis stream, a new MSK Serverless cluster (IAM auth) or an existing Kafka.

resource "aws_kinesis_stream" "events" {
  count            = local.kinesis ? 1 : 0
  name             = "${var.name}-events"
  shard_count      = var.kinesis_shard_count
  retention_period = var.kinesis_retention_hours
  encryption_type  = "KMS"
  kms_key_id       = aws_kms_key.main.arn

  stream_mode_details {
    stream_mode = "PROVISIONED"
  }
}

resource "aws_security_group" "msk" {
  #checkov:skip=CKV2_AWS_5:attached to the MSK Serverless cluster (vpc_config), which checkov does not follow
  count       = local.msk ? 1 : 0
  name        = "${var.name}-msk"
  description = "MSK Serverless and the ingest mapping's pollers (which use this group too)"
  vpc_id      = aws_vpc.main[0].id
}

resource "aws_vpc_security_group_ingress_rule" "msk_self" {
  count                        = local.msk ? 1 : 0
  security_group_id            = aws_security_group.msk[0].id
  description                  = "Kafka over IAM auth, from members of this group"
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  referenced_security_group_id = aws_security_group.msk[0].id
}

resource "aws_vpc_security_group_egress_rule" "msk_self" {
  count                        = local.msk ? 1 : 0
  security_group_id            = aws_security_group.msk[0].id
  description                  = "Kafka over IAM auth, to members of this group"
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  referenced_security_group_id = aws_security_group.msk[0].id
}

resource "aws_msk_serverless_cluster" "events" {
  count        = local.msk ? 1 : 0
  cluster_name = "${var.name}-events"

  vpc_config {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.msk[0].id]
  }

  client_authentication {
    sasl {
      iam {
        enabled = true
      }
    }
  }
}
