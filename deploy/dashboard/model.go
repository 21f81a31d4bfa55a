package dashboard

// The types below are the part of Grafana's dashboard JSON model
// (schemaVersion 39) that this dashboard uses. Options and field
// configuration stay loosely typed (map[string]any): Grafana's panel plugins
// each define their own, and typing them all would copy Grafana's schema
// rather than describe this dashboard.

// Dashboard is a Grafana dashboard as provisioned from a file.
type Dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	Description   string      `json:"description"`
	Tags          []string    `json:"tags"`
	Editable      bool        `json:"editable"`
	GraphTooltip  int         `json:"graphTooltip"`
	Refresh       string      `json:"refresh"`
	SchemaVersion int         `json:"schemaVersion"`
	Version       int         `json:"version"`
	Timezone      string      `json:"timezone"`
	Time          TimeRange   `json:"time"`
	Annotations   Annotations `json:"annotations"`
	Templating    Templating  `json:"templating"`
	Panels        []*Panel    `json:"panels"`
}

// TimeRange is the dashboard's default time range, in Grafana's relative
// syntax ("now-3h").
type TimeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Annotations lists the dashboard's annotation queries.
type Annotations struct {
	List []map[string]any `json:"list"`
}

// Templating lists the dashboard's variables.
type Templating struct {
	List []*Variable `json:"list"`
}

// Variable is a dashboard variable ($datasource, $job, ...).
type Variable struct {
	Name        string      `json:"name"`
	Label       string      `json:"label"`
	Type        string      `json:"type"`
	Description string      `json:"description,omitempty"`
	Datasource  *Datasource `json:"datasource,omitempty"`
	// Query is the datasource plugin ID for a datasource variable and a
	// PromQL-style variable query (label_values(...)) for a query variable.
	Query      any            `json:"query"`
	Definition string         `json:"definition,omitempty"`
	Refresh    int            `json:"refresh"`
	Multi      bool           `json:"multi"`
	IncludeAll bool           `json:"includeAll"`
	AllValue   string         `json:"allValue,omitempty"`
	Sort       int            `json:"sort,omitempty"`
	Hide       int            `json:"hide"`
	Regex      string         `json:"regex"`
	Current    map[string]any `json:"current"`
	Options    []any          `json:"options"`
}

// VariableQuery is the query of a Prometheus query variable, in the form
// Grafana's Prometheus variable editor saves.
type VariableQuery struct {
	Query string `json:"query"`
	RefID string `json:"refId"`
}

// Datasource refers to a datasource by type and UID; the UID is usually the
// ${datasource} variable.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// GridPos places a panel on Grafana's 24-column grid.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// Panel is one panel, or a row (Type "row") that heads the panels below it.
type Panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description,omitempty"`
	GridPos     GridPos        `json:"gridPos"`
	Collapsed   *bool          `json:"collapsed,omitempty"`
	Panels      []*Panel       `json:"panels,omitempty"`
	Datasource  *Datasource    `json:"datasource,omitempty"`
	Targets     []*Target      `json:"targets,omitempty"`
	FieldConfig *FieldConfig   `json:"fieldConfig,omitempty"`
	Options     map[string]any `json:"options,omitempty"`
}

// FieldConfig is a panel's field defaults and per-series overrides.
type FieldConfig struct {
	Defaults  map[string]any `json:"defaults"`
	Overrides []Override     `json:"overrides"`
}

// Override changes field properties of the series a matcher selects.
type Override struct {
	Matcher    map[string]any   `json:"matcher"`
	Properties []map[string]any `json:"properties"`
}

// Target is one PromQL query of a panel.
type Target struct {
	RefID        string      `json:"refId"`
	Datasource   *Datasource `json:"datasource"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat,omitempty"`
	Range        bool        `json:"range"`
	Instant      bool        `json:"instant"`
	Format       string      `json:"format,omitempty"`
}
