"""The Python + boto3 twin of infra/bench/src/main.rs: clients for DynamoDB, SQS and KMS at init,
one consistent GetItem per invocation. Run by AWS's runtime interface client (awslambdaric)."""

import os

import boto3

dynamodb = boto3.client("dynamodb")
sqs = boto3.client("sqs")
kms = boto3.client("kms")
TABLE = os.environ["BENCH_TABLE"]


def handler(event, context):
    item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": "m_demo"}}, ConsistentRead=True)
    return {"found": "Item" in item}
