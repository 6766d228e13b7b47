terraform {
  # 1.7: mock providers in `terraform test` (infra/aws/tests).
  required_version = ">= 1.7"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}
