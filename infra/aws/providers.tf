provider "aws" {
  region = var.region

  default_tags {
    tags = {
      app        = "remarketable"
      deployment = var.name
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

# The two zones of the private subnets, by name (var.availability_zones, default <region>a
# and <region>b), so a zone AWS adds never moves a subnet.
data "aws_availability_zones" "available" {
  state = "available"
  filter {
    name   = "zone-name"
    values = length(var.availability_zones) > 0 ? var.availability_zones : ["${var.region}a", "${var.region}b"]
  }
}
