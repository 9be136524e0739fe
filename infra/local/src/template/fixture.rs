//! One small template that uses every part of the subset, read with test names, for the readers' tests.

use std::collections::HashMap;

use super::{ACCOUNT, Naming, Template, TemplateError};

pub(super) struct Names;

impl Naming for Names {
    fn queue_url(&self, name: &str) -> String {
        format!("http://sqs.test/{ACCOUNT}/{name}")
    }

    fn key_id(&self, logical_id: &str) -> Option<String> {
        Some(format!("key-{logical_id}"))
    }
}

pub(super) fn parse(text: &str) -> Result<Template, TemplateError> {
    Template::parse(text, "st", &HashMap::from([("Issuer".to_owned(), "http://iss/".to_owned())]), &Names)
}

/// `BASE` read whole.
pub(super) fn base() -> Template {
    parse(BASE).unwrap()
}

/// The error of `BASE` with `from` replaced by `to` once.
pub(super) fn refused(from: &str, to: &str) -> String {
    let text = BASE.replacen(from, to, 1);
    assert_ne!(text, BASE, "the replacement {from:?} applies");
    parse(&text).unwrap_err().to_string()
}

pub(super) const BASE: &str = r#"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Issuer: {Type: String}
  Level: {Type: String, Default: info, AllowedValues: [info, debug]}
  Visibility: {Type: Number, Default: 30}
Globals:
  Function:
    Timeout: 7
    Environment:
      Variables:
        LEVEL: !Ref Level
        SHARED: global
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            JwtConfiguration: {issuer: !Ref Issuer, audience: [aud]}
      AccessLogSettings: {DestinationArn: !GetAtt Logs.Arn, Format: $context.requestId}
      DefaultRouteSettings: {ThrottlingRateLimit: 100, ThrottlingBurstLimit: 50}
      RouteSettings:
        "GET /open": {ThrottlingRateLimit: 5, ThrottlingBurstLimit: 5}
  Fn:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: makefile, BuildProperties: {Binary: fn-bin}}
    Properties:
      CodeUri: .
      MemorySize: 256
      LoggingConfig: {LogGroup: !Ref Logs}
      Policies: [{Statement: [{Effect: Allow, Action: "sqs:*", Resource: !GetAtt Work.Arn}]}]
      Environment:
        Variables:
          SHARED: mine
          TABLE: !Ref Things
          TABLE_ARN: !GetAtt Things.Arn
          QUEUE: !Ref Work
          KEY: !Ref Secrets
          WHERE: !Sub "${AWS::Region}/${Things}/${Work.QueueName}/${!Literal}"
          LONG: {"Fn::GetAtt": [Things, Arn]}
      Events:
        Open: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: get, Path: /open, Auth: {Authorizer: NONE}}}
        Default: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: "/things/{id}"}}
        Admin: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: POST, Path: /things, Auth: {Authorizer: Jwt, AuthorizationScopes: [admin]}}}
        Queue: {Type: SQS, Properties: {Queue: !GetAtt Work.Arn, BatchSize: 5, FunctionResponseTypes: [ReportBatchItemFailures]}}
        Tick: {Type: Schedule, Properties: {Schedule: rate(2 minutes)}}
  Things:
    Type: AWS::DynamoDB::Table
    DeletionPolicy: Retain
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}, {AttributeName: owner, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      GlobalSecondaryIndexes:
        - IndexName: by-owner
          KeySchema: [{AttributeName: owner, KeyType: HASH}]
          Projection: {ProjectionType: KEYS_ONLY}
      TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}
  Work:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
      VisibilityTimeout: !Ref Visibility
      RedrivePolicy: {deadLetterTargetArn: !GetAtt Dead.Arn, maxReceiveCount: 3}
  Dead:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true}
  Secrets:
    Type: AWS::KMS::Key
  DeadAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties: {MetricName: x}
  Logs:
    Type: AWS::Logs::LogGroup
    Metadata: {checkov: {skip: [{id: CKV_AWS_158, comment: why}]}}
    Properties: {RetentionInDays: 365}
"#;
