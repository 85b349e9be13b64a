//! The user guide's commands, verbatim (docs/operator-guide.ja.md; `tests/examples.rs` checks that
//! each of them is in the guide). The tests run exactly these strings with real kubectl and helm.

/// インストール, 方法 1: Helm.
pub const INSTALL_HELM: &str = "# CRD をインストール
kubectl apply -f k8s/crds/

# Helm チャートをインストール
helm install mcp-operator charts/mcp-operator \\
  --namespace mcp-system \\
  --create-namespace";

/// インストール, 方法 2: kubectl.
pub const INSTALL_KUBECTL: &str = "# CRD をインストール
kubectl apply -f k8s/crds/

# Operator をインストール
kubectl apply -f k8s/manifests/";

/// インストールの確認: operator pods.
pub const CHECK_PODS: &str = "kubectl get pods -n mcp-system";
/// インストールの確認: CRDs.
pub const CHECK_CRDS: &str = "kubectl get crd | grep mcp.n-takatsu.dev";

/// 基本的な MCP サーバーのデプロイ.
pub const DEPLOY: &str = "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata:
  name: my-mcp-server
spec:
  replicas: 2
  image: \"mcp-rs:latest\"
  transport: http
  port: 3000
EOF";

/// ステータスを確認.
pub const STATUS: &str = "kubectl get mcpserver my-mcp-server
kubectl describe mcpserver my-mcp-server";

/// プラグインの追加: the Plugin.
pub const ADD_PLUGIN: &str = "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata:
  name: wordpress-plugin
spec:
  name: wordpress
  image: \"mcp-rs-wordpress-plugin:latest\"
  version: \"1.0.0\"
  isolation:
    level: Container
EOF";

/// プラグインの追加: the JSON patch.
pub const PATCH_PLUGIN: &str = "kubectl patch mcpserver my-mcp-server --type='json' -p='[
  {\"op\": \"add\", \"path\": \"/spec/plugins/-\", \"value\": \"wordpress-plugin\"}
]'";

/// セキュリティポリシーの適用: the examples.
pub const APPLY_EXAMPLES: &str = "kubectl apply -f k8s/manifests/examples.yaml";

/// セキュリティポリシーの適用: the merge patch.
pub const PATCH_POLICY: &str = "kubectl patch mcpserver my-mcp-server --type='merge' -p='
spec:
  securityPolicy: default-policy
'";

/// スケーリング.
pub const SCALE: &str = "kubectl scale mcpserver my-mcp-server --replicas=5";

/// ログの確認.
pub const OPERATOR_LOGS: &str = "kubectl logs -n mcp-system -l app.kubernetes.io/name=mcp-operator";
/// MCP サーバーのログ.
pub const SERVER_LOGS: &str = "kubectl logs -l app=my-mcp-server";

/// メトリクスの確認.
pub const PORT_FORWARD: &str = "kubectl port-forward -n mcp-system svc/mcp-operator-metrics 8080:8080";

/// アップグレード (Helm).
pub const UPGRADE_HELM: &str = "helm upgrade mcp-operator charts/mcp-operator \\
  --namespace mcp-system";
/// アップグレード (kubectl).
pub const UPGRADE_KUBECTL: &str = "kubectl apply -f k8s/manifests/";

/// アンインストール (Helm).
pub const UNINSTALL_HELM: &str = "helm uninstall mcp-operator --namespace mcp-system";
/// アンインストール (kubectl).
pub const UNINSTALL_KUBECTL: &str = "kubectl delete -f k8s/manifests/";
/// CRD を削除.
pub const DELETE_CRDS: &str = "kubectl delete -f k8s/crds/";

/// Operator が起動しない.
pub const TROUBLE_OPERATOR: &str = "kubectl describe pod -n mcp-system -l app.kubernetes.io/name=mcp-operator";
/// RBAC 権限を確認.
pub const CAN_I: &str = "kubectl auth can-i list mcpservers --as=system:serviceaccount:mcp-system:mcp-operator";
/// MCPServer が Running にならない (with <name> filled in).
pub fn trouble_server(name: &str) -> String {
    format!(
        "kubectl describe mcpserver {name}
kubectl get deployment {name}
kubectl describe deployment {name}"
    )
}
/// CRD の検証エラー.
pub const EXPLAIN: &str = "kubectl explain mcpserver.spec";
/// リソースを検証 (with the file name filled in).
pub fn dry_run(file: &str) -> String {
    format!("kubectl apply --dry-run=client -f {file}")
}
/// リソースが削除できない (with <name> filled in).
pub fn show_finalizers(name: &str) -> String {
    format!("kubectl get mcpserver {name} -o yaml | grep finalizers")
}
/// Finalizer を削除 (with <name> filled in).
pub fn remove_finalizers(name: &str) -> String {
    format!("kubectl patch mcpserver {name} -p '{{\"metadata\":{{\"finalizers\":[]}}}}' --type=merge")
}

/// カナリアデプロイメント.
pub const CANARY: &str = "# ステージング環境
kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata:
  name: mcp-server-canary
spec:
  replicas: 1
  image: \"mcp-rs:v0.2.0-beta\"
  transport: http
EOF

# 本番環境
kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata:
  name: mcp-server-production
spec:
  replicas: 5
  image: \"mcp-rs:v0.1.0\"
  transport: http
EOF";

/// マルチテナント環境 (with the tenant namespace filled in for tenant-a).
pub fn multi_tenant(tenant_ns: &str) -> String {
    format!(
        "# テナント A 用の namespace
kubectl create namespace {tenant_ns}

# テナント A の MCPServer
kubectl apply -n {tenant_ns} -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata:
  name: mcp-server-a
spec:
  replicas: 2
  securityPolicy: \"tenant-a-policy\"
EOF"
    )
}
